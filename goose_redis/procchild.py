"""One child process of ``--processes N``: a real Runner on a sub-slot, reporting to its parent.

``procgroup.py`` starts it with multiprocessing's "spawn" context (a fresh interpreter, never a
fork of a process that runs an event loop). The child loads the load test the way its parent
got it (the ``-f`` file, or the program's main module, which spawn imports as ``__mp_main__``
without running its ``if __name__ == "__main__"`` part), checks by its hash that it is the same
test, then runs a Runner with its own event loop, connection pool and Metrics on its part of
the parent's slot, and writes its own logs. Every half second it sends its metric delta (the
wire form the gaggle merges exactly) and its live counters over the pipe; the delta cut at the
metrics reset travels alone (``RAMP``), and the last one with ``FINAL``.

Signals: a terminal's Ctrl-C reaches the whole process group; the child ignores SIGINT and
SIGTERM and stops when the parent says so. When the pipe to the parent closes (the parent
exited, say on a second Ctrl-C, or was killed) the child exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import IO, Any

from . import loop
from .errors import LoadTestError
from .eventlogs import EventLogs
from .loader import load_file, scenarios_of
from .logs import set_prefix, setup_logging
from .metrics import Metrics
from .recorder import Recorder
from .runner import TICK_S, Runner, RunOptions
from .scenario import LoadTest
from .shape import Shape, Slot

log = logging.getLogger("goose_redis.procs")

# Child -> parent: (kind, ChildState, payload). Parent -> child: (kind, ...).
READY, TICK, RAMP, FINAL, ERROR = "ready", "tick", "ramp", "final", "error"
START, SHAPE, STOP = "start", "shape", "stop"


@dataclass(frozen=True)
class LoadSource:
    """Where a child finds the parent's load test, and what to check it against."""

    file: str | None  # the -f file; None: the program's main module (``python my_test.py``)
    waits: tuple[tuple[float, float] | None, ...]  # every scenario's wait as the parent runs it (the demo's)
    chosen: tuple[int, ...]  # the scenarios --scenarios (or the Manager) selected, by position
    full_hash: str

    @classmethod
    def of(cls, load_test: LoadTest, file: str | None) -> LoadSource:
        every = load_test.all_scenarios
        chosen = tuple(i for i, s in enumerate(every) if any(s is c for c in load_test.scenarios))
        return cls(file, tuple(s.wait for s in every), chosen, load_test.full_hash())

    def load(self) -> LoadTest:
        if self.file is not None:
            scenarios = load_file(self.file)
        else:
            main = sys.modules.get("__mp_main__")
            if main is None:
                raise LoadTestError("the program's main module was not imported in this process")
            scenarios = scenarios_of(main)
        if len(scenarios) == len(self.waits):
            for scenario, wait in zip(scenarios, self.waits, strict=True):
                scenario.wait = wait
        if max(self.chosen, default=-1) >= len(scenarios):
            raise LoadTestError("this process found fewer scenarios than its parent")
        test = LoadTest([scenarios[i] for i in self.chosen], scenarios)
        if test.full_hash() != self.full_hash:
            raise LoadTestError(
                f"this process loaded a different load test (hash {test.full_hash()}, the parent's "
                f"{self.full_hash}): give the scenarios main() runs at module level, or use -f FILE"
            )
        return test


@dataclass(frozen=True)
class ChildLogs:
    """This child's own files of every per-process log (``outputs.per_process``)."""

    request: str | None = None
    transaction: str | None = None
    scenario: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class ChildSpec:
    index: int  # 0-based; the child runs slot.sub(index, count)
    count: int
    options: RunOptions
    source: LoadSource
    logs: ChildLogs = field(default_factory=ChildLogs)
    verbose: int = 0
    quiet: bool = False
    prefix: str = ""


@dataclass(frozen=True)
class ChildState:
    """A child's live counters, sent with every message."""

    pid: int = 0
    active: int = 0
    launched: int = 0
    ramp_done_at: float | None = None
    stopping_at: float | None = None
    stop_reason: str = ""
    ended_at: float | None = None


def child_main(spec: ChildSpec, conn: Connection) -> None:
    """The child's entry point (the multiprocessing target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    setup_logging(spec.verbose, spec.quiet)
    set_prefix(f"{spec.prefix}[p{spec.index + 1}] ")
    try:
        load_test = spec.source.load()
    except Exception as exc:  # an InvalidOption or an import error: the parent reports it
        _send(conn, (ERROR, ChildState(os.getpid()), str(exc)))
        return
    loop.run(Child(spec, load_test, conn).main())


def _send(conn: Connection, message: tuple[Any, ...]) -> None:
    try:
        conn.send(message)
    except OSError:  # the parent is gone: nobody to report to
        os._exit(1)


class Child:
    def __init__(self, spec: ChildSpec, load_test: LoadTest, conn: Connection) -> None:
        self.spec = spec
        self.load_test = load_test
        self.conn = conn
        self.metrics = Metrics()
        self.runner: Runner | None = None
        self.start: tuple[float, Shape, Slot] | None = None
        self.stop_reason: str | None = None
        self.started = asyncio.Event()

    def state(self) -> ChildState:
        r = self.runner
        if r is None:
            return ChildState(os.getpid())
        return ChildState(os.getpid(), r.active, r.launched, r.ramp_done_at, r.stopping_at, r.stop_reason, r.ended_at)

    def send(self, kind: str, delta: Metrics | None = None) -> None:
        wire = delta.to_wire() if delta is not None and not delta.is_empty() else None
        _send(self.conn, (kind, self.state(), wire))

    def on_command(self) -> None:
        """The parent wrote (or closed the pipe: then exit at once, the parent is gone)."""
        try:
            while self.conn.poll():
                self.handle(self.conn.recv())
        except (EOFError, OSError):
            os._exit(1)

    def handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == START:
            self.start = message[1], message[2], message[3]
            self.started.set()
        elif kind == SHAPE:
            if self.runner is not None:
                self.runner.set_shape(message[1], message[2])
            elif self.start is not None:
                self.start = self.start[0], message[1], message[2]
        elif kind == STOP:
            self.stop_reason = str(message[1])
            if self.runner is not None:
                self.runner.stop(self.stop_reason)
            self.started.set()  # a stop before the start ends the wait too

    def on_reset(self) -> None:
        """Goose's metrics reset: everything so far is the ramp-up's, sent on its own."""
        self.send(RAMP, self.metrics.take())

    async def report(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.send(TICK, self.metrics.take())

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        fd = self.conn.fileno()
        with contextlib.ExitStack() as stack:
            files = {
                key: stack.enter_context(open(path, "wb"))  # noqa: ASYNC230 - before the run, buffered
                for key, path in vars(self.spec.logs).items()
                if path
            }
            request_log: IO[bytes] | None = files.pop("request", None)
            events = EventLogs(self.load_test, **files) if files else None
            recorder = Recorder(self.metrics, request_log, events=events)
            loop.add_reader(fd, self.on_command)
            self.send(READY)
            await self.started.wait()
            if self.start is not None:
                start_at, shape, slot = self.start
                recorder.origin = start_at
                self.runner = Runner(self.load_test, self.spec.options, recorder, shape, slot)
                if self.stop_reason is not None:
                    self.runner.stop(self.stop_reason)
                reporter = asyncio.create_task(self.report())
                try:
                    await self.runner.run(start_at, self.on_reset)
                finally:
                    reporter.cancel()
                    await asyncio.gather(reporter, return_exceptions=True)
            loop.remove_reader(fd)
        # The logs are closed (flushed) now: the last delta, then the pipe.
        self.send(FINAL, self.metrics.take())
        self.conn.close()
