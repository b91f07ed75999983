"""``--processes N``: N child processes of one host run its users, and look like one Runner.

A standalone run or a Worker makes a ``ProcessGroup`` instead of a ``Runner`` when
``--processes`` is more than 1; the group has the Runner's interface (``run``, ``set_shape``,
``stop``, ``active``, ``shape``, the phase moments), so the caller does not change. Child ``j``
of ``m`` (``procchild.py``) runs a real Runner on ``slot.sub(j, m)``: every ``m``-th user of the
caller's slot, the same share of the open model's iterations and of the throttle, following the
same shape from the same start instant. So the split is deterministic and needs no talk between
the children.

The children send metric deltas in the wire form the gaggle merges exactly; the group merges
them into the caller's ``Metrics``, so the standalone's report and the Worker's outbox see one
process's worth of metrics. Goose's metrics reset is kept exact: a child cuts its delta at the
reset and sends it alone; the group calls the caller's ``on_reset`` once every live child's
ramp-up delta is merged, and holds the children's later deltas until then. The users series
adds up the children: each bucket gets the sum of each child's most users during it.

A child that dies is logged and kept in ``problems`` (the standalone reports them as its
``integrity``: exit code 3, as a lost Worker); what it sent so far stays in the totals, its
users are not run again, and the other children go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from .config import Config
from .errors import LoadTestError
from .logs import prefix
from .metrics import Metrics, WireError
from .outputs import per_process
from .passes import ON_STOP_TIMEOUT_S
from .procchild import (
    ERROR,
    FINAL,
    RAMP,
    READY,
    SHAPE,
    START,
    STOP,
    ChildLogs,
    ChildSpec,
    ChildState,
    LoadSource,
    child_main,
)
from .recorder import Recorder
from .runner import STOP_GRACE_S, TICK_S, Runner, RunOptions
from .scenario import LoadTest
from .series import Series
from .shape import WHOLE, Shape, Slot

log = logging.getLogger("goose_redis.procs")

SPAWN_TIMEOUT_S = 120.0  # a child imports Python, aiohttp and the load test: slow on a busy host
# After a stop, a child drains (STOP_GRACE_S), runs on_stop (ON_STOP_TIMEOUT_S), then reports.
FINISH_PATIENCE_S = STOP_GRACE_S + ON_STOP_TIMEOUT_S + 15.0
PEAKS_KEPT = 600  # buckets whose per-child users the group remembers


@dataclass
class _Child:
    """The group's view of one child process."""

    index: int
    process: Any  # multiprocessing's SpawnProcess
    conn: Connection
    state: ChildState = field(default_factory=ChildState)
    ready: bool = False
    reset: bool = False  # sent its ramp-up delta
    final: bool = False
    ended: bool = False  # final, or lost
    error: str | None = None
    held: list[Metrics] = field(default_factory=list)  # after its reset, until the group's

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """A child starts with SIGINT and SIGTERM ignored (an ignored signal stays ignored across
    exec), so a Ctrl-C while it imports does not kill it: the parent decides when it stops."""
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


class ProcessGroup:
    def __init__(self, config: Config, load_test: LoadTest, options: RunOptions, metrics: Metrics,
                 shape: Shape, slot: Slot = WHOLE) -> None:  # fmt: skip
        self.config = config
        self.load_test = load_test
        self.options = options
        self.metrics = metrics
        self.recorder = Recorder(metrics)  # the Runner's interface: the children record, each its own
        self.shape = shape
        self.slot = slot
        self.count = config.processes
        self.stop_event = asyncio.Event()
        self.stop_reason = ""
        self.problems: list[str] = []
        self.started_at: float | None = None
        self.ramp_done_at: float | None = None
        self.stopping_at: float | None = None
        self.ended_at: float | None = None
        self._children: list[_Child] = []
        self._changed = asyncio.Event()
        self._on_reset: Callable[[], None] | None = None
        self._reset_done = False
        self._running = False
        self._peaks: dict[int, dict[int, int]] = {}  # bucket -> child -> its most users

    # -- the Runner's interface ---------------------------------------------------------

    @property
    def active(self) -> int:
        return sum(c.state.active for c in self._children if not c.ended)

    @property
    def launched(self) -> int:
        return sum(c.state.launched for c in self._children)

    def elapsed(self, now: float | None = None) -> float:
        return (now if now is not None else time.time()) - (self.started_at or time.time())

    def set_shape(self, shape: Shape, slot: Slot | None = None) -> None:
        self.shape = shape
        if slot is not None:
            self.slot = slot
        if self._running:
            for c in self._children:
                self._send(c, (SHAPE, shape, self.slot.sub(c.index, self.count)))

    def stop(self, reason: str) -> None:
        if self.stop_event.is_set():
            return
        self.stop_reason = reason
        self.stopping_at = time.time()
        self.stop_event.set()
        for c in self._children:
            self._send(c, (STOP, reason))
        self._changed.set()

    async def spawn(self) -> None:
        """Start the children and wait until each has loaded the load test (``run`` does it when
        not done yet; a standalone run does it first, so the clock starts with every child ready)."""
        if self._children:
            return
        ctx = multiprocessing.get_context("spawn")
        loop = asyncio.get_running_loop()
        source = LoadSource.of(self.load_test, self.config.file)
        for j in range(self.count):
            ours, theirs = ctx.Pipe()
            spec = ChildSpec(j, self.count, self.options, source, self._logs(j), self.config.verbose,
                             self.config.quiet, prefix())  # fmt: skip
            process = ctx.Process(target=child_main, args=(spec, theirs), name=f"goose-redis-p{j + 1}", daemon=True)
            with _signals_ignored():
                process.start()
            theirs.close()  # ours alone now: the child's exit closes the pipe
            child = _Child(j, process, ours)
            self._children.append(child)
            threading.Thread(target=self._read, args=(loop, child), name=f"procs-p{j + 1}", daemon=True).start()
            log.info("process %d of %d started (pid %d)", j + 1, self.count, child.pid)
        deadline = time.monotonic() + SPAWN_TIMEOUT_S
        while not all(c.ready or c.ended for c in self._children) and not self.stop_event.is_set():
            if not await self._wait_changed(deadline - time.monotonic()):
                await self._abandon()
                raise LoadTestError(f"the {self.count} processes did not start within {SPAWN_TIMEOUT_S:.0f}s")
        failed = next((c for c in self._children if c.ended and not c.final), None)
        if failed is not None:
            await self._abandon()
            why = failed.error or f"it exited with code {failed.process.exitcode}"

            raise LoadTestError(f"process {failed.index + 1} of {self.count} could not start: {why}")

    async def run(self, start_at: float, on_reset: Callable[[], None] | None = None,
                  on_tick: Callable[[float], None] | None = None) -> None:  # fmt: skip
        self._on_reset = on_reset
        await self.spawn()
        self.started_at = start_at
        self._running = True
        for c in self._children:
            self._send(c, (START, start_at, self.shape, self.slot.sub(c.index, self.count)))
            if self.stop_event.is_set():
                self._send(c, (STOP, self.stop_reason))
        idle = [c.index + 1 for c in self._children if self.slot.sub(c.index, self.count).count(self.shape.peak) == 0]
        if idle:
            log.info("processes %s have no users (%d users at most)", ", ".join(map(str, idle)), self.shape.peak)
        ticker = asyncio.create_task(self._tick(on_tick))
        try:
            while not all(c.ended for c in self._children):
                await self._wait_changed(1.0)
                if self.stopping_at is not None and time.time() - self.stopping_at > FINISH_PATIENCE_S:
                    for c in self._children:
                        if not c.ended:
                            log.error("process %d (pid %d) did not finish after the stop: killed", c.index + 1, c.pid)
                            c.process.kill()
            self._try_reset(at_end=True)
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            self.ended_at = time.time()
            await self._abandon()

    # -- the children's messages (read by one thread per child, handled on the loop) --------

    def _read(self, loop: asyncio.AbstractEventLoop, child: _Child) -> None:
        while True:
            try:
                message = child.conn.recv()
            except (EOFError, OSError):
                child.process.join(5.0)  # reaped: its exit code says how it ended
                message = None
            except Exception:  # not a message of ours: that child can not be followed any more
                log.exception("process %d sent something unreadable: stopping it", child.index + 1)
                child.process.kill()
                child.process.join(5.0)
                message = None
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
                loop.call_soon_threadsafe(self._on_message, child, message)
            if message is None:
                return

    def _on_message(self, child: _Child, message: tuple[Any, ...] | None) -> None:
        self._changed.set()
        if message is None:
            self._on_eof(child)
            return
        kind, state, payload = message
        child.state = state
        if kind == READY:
            child.ready = True
        elif kind == ERROR:
            child.error = str(payload)
        else:
            if payload is not None:
                self._take(child, payload)
            if kind == RAMP:
                child.reset = True
            elif kind == FINAL:
                child.final = child.ended = True
            self._try_reset()
        self._follow_children()

    def _on_eof(self, child: _Child) -> None:
        if child.ended:
            return
        child.ended = True
        if not child.ready:
            return  # a start-up failure: spawn() reports it
        code = child.process.exitcode
        how = f"killed by signal {-code}" if isinstance(code, int) and code < 0 else f"exit code {code}"
        problem = (f"process {child.index + 1} of {self.count} (pid {child.pid}) ended without its final "
                   f"metrics ({how})")  # fmt: skip
        self.problems.append(problem)
        log.error("%s: what it sent so far is kept; its users are not run again", problem)
        self._try_reset()
        self._follow_children()

    def _take(self, child: _Child, payload: Any) -> None:
        try:
            delta = Metrics.from_wire(payload)
        except WireError as exc:
            log.error("process %d sent metrics that do not parse: %s", child.index + 1, exc)
            return
        self._users(child, delta.series)
        if child.reset and not self._reset_done:
            child.held.append(delta)  # after its reset, before the group's: the steady phase's
        else:
            self.metrics.merge(delta)

    def _users(self, child: _Child, series: Series) -> None:
        """Users are per process in the children's series; the group's bucket holds their sum."""
        for key, bucket in series.buckets.items():
            if not bucket.users:
                continue
            most = max(bucket.users.values())
            bucket.users = {}
            peaks = self._peaks.setdefault(key, {})
            if most > peaks.get(child.index, -1):
                peaks[child.index] = most
                self.metrics.series.set_users(float(key), sum(peaks.values()), self.options.source)
        while len(self._peaks) > PEAKS_KEPT:
            del self._peaks[min(self._peaks)]

    def _try_reset(self, at_end: bool = False) -> None:
        """The caller's metrics reset, once every live child's ramp-up delta is merged."""
        if self._reset_done or not any(c.reset for c in self._children):
            return
        if not at_end and not all(c.reset or c.ended for c in self._children):
            return
        self._reset_done = True
        self.ramp_done_at = max((c.state.ramp_done_at or 0.0 for c in self._children if c.reset), default=None)
        if self._on_reset is not None:
            self._on_reset()
        for c in self._children:
            for delta in c.held:
                self.metrics.merge(delta)
            c.held.clear()

    def _follow_children(self) -> None:
        """The group's phase moments from the children's: the ramp-up ends with the last child's,
        and the group is stopping once every child is (a child may finish its --iterations early)."""
        live = [c for c in self._children if not c.ended or c.final]
        if self.ramp_done_at is None and live and all(c.state.ramp_done_at is not None for c in live):
            self.ramp_done_at = max(c.state.ramp_done_at or 0.0 for c in live)
        if self.stop_event.is_set() or not self._running:
            return
        if all(c.ended or c.state.stopping_at is not None for c in self._children):
            stopped = [c.state for c in self._children if c.state.stopping_at is not None]
            self.stop_reason = stopped[0].stop_reason if stopped else "every process ended"
            self.stopping_at = max((s.stopping_at or 0.0 for s in stopped), default=time.time())
            self.stop_event.set()

    # -- plumbing ---------------------------------------------------------------------

    def _logs(self, j: int) -> ChildLogs:
        c = self.config

        def mine(path: str | None) -> str | None:
            return per_process(path, self.count)[j] if path else None

        return ChildLogs(mine(c.request_log), mine(c.transaction_log), mine(c.scenario_log), mine(c.error_log))

    def _send(self, child: _Child, message: tuple[Any, ...]) -> None:
        if child.ended:
            return
        try:
            child.conn.send(message)
        except OSError:
            pass  # it is gone: its reader reports it

    async def _wait_changed(self, timeout: float) -> bool:
        """Wait for a child's message; False when ``timeout`` passed without one."""
        self._changed.clear()
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await self._changed.wait()
        except TimeoutError:
            return False
        return True

    async def _tick(self, on_tick: Callable[[float], None] | None) -> None:
        while on_tick is not None:
            try:
                on_tick(time.time())
            except Exception:  # a display problem must never stop the load
                log.exception("progress callback failed")
            await asyncio.sleep(TICK_S)

    async def _abandon(self) -> None:
        """Tell every child to stop, wait a little for the processes to exit, then kill the rest."""
        for c in self._children:
            self._send(c, (STOP, "the parent is ending"))
        procs = [c.process for c in self._children]

        def join() -> None:
            deadline = time.monotonic() + 5.0
            for p in procs:
                p.join(max(0.0, deadline - time.monotonic()))
                if p.is_alive():
                    p.kill()
                    p.join(1.0)

        await asyncio.to_thread(join)
        for c in self._children:
            c.conn.close()


Engine = Runner | ProcessGroup  # what a standalone run or a Worker drives
