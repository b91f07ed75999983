"""The local engine: follow a load shape, run users, stop them, drain.

It knows nothing of Redis. The shape (``shape.py``) says how many users run at each
moment and the slot says which of them are this process's. The shape may change
while the run goes on (a plan step, a control command, a Worker lost elsewhere in
the gaggle): ``set_shape`` hands over the new one and the engine catches up at once,
launching the users now due (in one batch when it is behind) and stopping the
newest first, each after its current transaction and its ``on_stop``.

Two ways to run users: the closed model (each user loops over its scenario) and
the open model (``--arrival-rate``: users wait in a pool and each due iteration
takes a free one, or is dropped and counted when none is free).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .passes import Passes, UserRun
from .pool import HttpPool
from .recorder import Recorder
from .scenario import LoadTest
from .shape import EPS, WHOLE, Shape, Slot
from .throttle import Throttle
from .user import User

log = logging.getLogger("goose_redis.runner")

# On stop, users finish the request in flight for up to this long, so what
# the target completed is what we count; then they are cancelled.
STOP_GRACE_S = 5.0
TICK_S = 0.5
# Launches due within this much of now happen now: a timer per user would cost more than it buys.
LAUNCH_SLACK_S = 0.001
# Users launched in one pass when launches are late: between passes the loop runs the users
# already launched, so their first requests finish and hand their connections to the next ones
# (10,000 users launched at once would open 10,000 connections, at about 5 times the CPU each).
LAUNCH_BATCH = 20


@dataclass(frozen=True)
class RunOptions:
    host: str | None
    timeout_s: float = 60.0
    iterations: int | None = None
    source: str = ""  # series source: the Worker id in a gaggle
    own_end: bool = True  # stop at the shape's end; a Worker waits for the Manager's EXIT instead
    co_mitigation: str = "disabled"


class Runner:
    def __init__(
        self, load_test: LoadTest, options: RunOptions, recorder: Recorder, shape: Shape, slot: Slot = WHOLE
    ) -> None:
        self.load_test = load_test
        self.options = options
        self.recorder = recorder
        self.shape = shape
        self.slot = slot
        self.throttle = Throttle()
        self.pool = HttpPool(options.timeout_s)  # every user's connections; cookies stay per user
        self.stop_event = asyncio.Event()
        self.stop_reason = ""
        self.running: dict[int, UserRun] = {}  # users not told to stop, by gaggle-wide index
        self.leaving: set[UserRun] = set()  # told to stop, finishing their transaction and on_stop
        self.finished: set[int] = set()  # ran their --iterations: never launched again
        self.launched = 0  # users launched so far, in all
        self.started_at: float | None = None
        self.ramp_done_at: float | None = None
        self.stopping_at: float | None = None
        self.ended_at: float | None = None
        self._tasks: dict[asyncio.Task[None], UserRun] = {}
        self.passes = Passes(recorder, options)  # what each running user does
        self._wake = asyncio.Event()
        self._slot_seen = slot
        self._want = 0
        self._free: deque[UserRun] = deque()
        self._dropped_logged = False

    # -- steering ---------------------------------------------------------------

    def stop(self, reason: str) -> None:
        if not self.stop_event.is_set():
            self.stop_reason = reason
            self.stop_event.set()
            self._wake.set()

    def set_shape(self, shape: Shape, slot: Slot | None = None) -> None:
        """Follow a new shape (and, for a Worker, a new place in the gaggle) from now on."""
        self.shape = shape
        if slot is not None:
            self.slot = slot
        self._wake.set()

    @property
    def active(self) -> int:
        """Users running and not told to stop."""
        return len(self.running)

    def elapsed(self, now: float | None = None) -> float:
        return (now if now is not None else time.time()) - (self.started_at or time.time())

    # -- the run -----------------------------------------------------------------

    async def _wait_until(self, deadline: float) -> bool:
        """Sleep until ``deadline`` (epoch); True if stopped first."""
        delay = deadline - time.time()
        if delay > 0:
            try:
                await asyncio.wait_for(self.stop_event.wait(), delay)
            except TimeoutError:
                pass
        return self.stop_event.is_set()

    async def run(
        self,
        start_at: float,
        on_reset: Callable[[], None] | None = None,
        on_tick: Callable[[float], None] | None = None,
    ) -> None:
        if await self._wait_until(start_at):
            self.started_at = self.ended_at = time.time()
            return
        self.started_at = start_at
        ticker = asyncio.create_task(self._tick(on_tick))
        shaper = asyncio.create_task(self._follow(on_reset))
        dispatcher = asyncio.create_task(self._dispatch()) if self.shape.arrival is not None else None
        try:
            await self.stop_event.wait()
            self.stopping_at = time.time()
            log.info("stopping: %s", self.stop_reason)
            self.throttle.stop()
            background = [t for t in (shaper, dispatcher) if t is not None]
            for t in background:
                t.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._drain()
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            self._tick_once()
            self.ended_at = time.time()
            await self.pool.close()  # after the drain: every user has closed its session

    async def _follow(self, on_reset: Callable[[], None] | None) -> None:
        """Keep the users this slot should run at every moment of the shape."""
        assert self.started_at is not None
        reset_pending = True
        while not self.stop_event.is_set():
            self._wake.clear()
            now = time.time()
            t = now - self.started_at
            shape = self.shape
            # Launches due within the slack happen now, then one timer to the next: a pass per
            # launch at 10,000 users a second would spin the loop and starve the users it launched.
            horizon = t + LAUNCH_SLACK_S
            behind = self._reconcile(shape, horizon)
            self.throttle.set_rate(shape.throttle * shape.share(t, self.slot) if shape.throttle is not None else None)
            deadlines = []
            if shape.reset_s is not None and reset_pending:
                if t >= shape.reset_s - EPS and not behind:
                    reset_pending = False
                    self._ramp_done(now, on_reset)
                else:
                    deadlines.append(shape.reset_s)
            elif self.ramp_done_at is None and shape.segments and not behind:
                # No metrics reset (a test plan): the phase still ends with the first segment, even
                # when the slot's own last launch came earlier.
                if horizon >= shape.segments[0].finish - EPS:
                    self.ramp_done_at = now
                else:
                    deadlines.append(shape.segments[0].finish)
            if self.options.own_end and shape.end_s is not None:
                if t >= shape.end_s - EPS:
                    self.stop("run time elapsed")
                    return
                deadlines.append(shape.end_s)
            if self._iterations_done(t):
                self.stop(f"every user ran {self.options.iterations} iteration(s)")
                return
            nxt = shape.next_change(horizon, self.slot)
            if nxt is not None:
                deadlines.append(nxt)
            delay = min(deadlines) - (time.time() - self.started_at) if deadlines else None
            if behind or (delay is not None and delay <= 0):
                await asyncio.sleep(0)  # behind: go round again, but let the users run
                continue
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _ramp_done(self, now: float, on_reset: Callable[[], None] | None) -> None:
        self.ramp_done_at = now
        log.info("launched %d users", self.active)
        if on_reset is not None:
            on_reset()

    def _iterations_done(self, t: float) -> bool:
        if self.options.iterations is None or self.running or self.leaving:
            return False
        return self.shape.next_change(t, self.slot) is None

    def _reconcile(self, shape: Shape, t: float) -> bool:
        """Launch the users due by ``t`` (lowest index first); stop those no longer wanted (highest first).
        True when more launches are due than one batch holds."""
        slot = self.slot
        want = slot.count(shape.users_at(t))
        behind = False
        if slot != self._slot_seen:  # our place in the gaggle changed: compare the sets
            self._slot_seen = slot
            wanted = {slot.index(k) for k in range(want)}
            for i in sorted((i for i in self.running if i not in wanted), reverse=True):
                self._stop_user(i)
            for k in range(want):
                self._launch(slot.index(k))
        elif want > self._want:
            due, want = want, min(want, self._want + LAUNCH_BATCH)
            for k in range(self._want, want):
                self._launch(slot.index(k))
            behind = want < due
        elif want < self._want:
            for k in range(self._want - 1, want - 1, -1):
                self._stop_user(slot.index(k))
        else:
            return False
        self._want = want
        # Sampled after each batch as well as each tick, so the users series follows the ramp.
        self.recorder.metrics.series.set_users(time.time(), self.active, self.options.source)
        return behind

    def _launch(self, index: int) -> None:
        if index in self.running or index in self.finished or self.stop_event.is_set():
            return
        si = self.load_test.scenario_for_user(index)
        planned = self.load_test.planned[si]
        scenario = planned.scenario
        user = User(index, scenario, si, scenario.host or self.options.host or "", self.recorder,
                    self.options.timeout_s, self.pool, self.throttle,
                    self.options.co_mitigation != "disabled")  # fmt: skip
        run = UserRun(user, planned)
        self.running[index] = run
        self.launched += 1
        log.info("launching user %d from %s...", index + 1, scenario.name)
        if self.shape.arrival is not None:
            run.go = asyncio.Event()
        if self.shape.arrival is not None and not planned.on_start:
            self._enqueue(run)  # free at once: an iteration due at this very moment finds it
        run.task = asyncio.create_task(self._user_main(run))
        self._tasks[run.task] = run

    def _stop_user(self, index: int) -> None:
        run = self.running.pop(index, None)
        if run is None:
            return
        self.leaving.add(run)
        run.stop.set()
        run.wake()

    async def _tick(self, on_tick: Callable[[float], None] | None) -> None:
        while True:
            now = self._tick_once()
            if on_tick is not None:
                try:
                    on_tick(now)
                except Exception:  # a display problem must never stop the load
                    log.exception("progress callback failed")
            await asyncio.sleep(TICK_S)

    def _tick_once(self) -> float:
        now = time.time()
        self.recorder.metrics.series.set_users(now, self.active, self.options.source)
        return now

    # -- users -------------------------------------------------------------------

    async def _user_main(self, run: UserRun) -> None:
        user, planned = run.user, run.planned
        try:
            for ti in planned.on_start:
                await self.passes.transaction(user, planned, ti)
                if run.stop.is_set():
                    break
            else:
                if self.shape.arrival is not None:
                    await self._serve_arrivals(run)
                else:
                    await self.passes.closed_loop(run)
            await self.passes.on_stop(user, planned)
        finally:
            self._user_left(run)
            await user.close()

    def _user_left(self, run: UserRun) -> None:
        index = run.user.index
        if self.running.get(index) is run:
            del self.running[index]
        self.leaving.discard(run)
        if run.completed:
            self.finished.add(index)
        self.recorder.metrics.series.set_users(time.time(), self.active, self.options.source)
        log.info("exiting user %d from %s...", index + 1, run.planned.scenario.name)
        self._wake.set()

    async def _serve_arrivals(self, run: UserRun) -> None:
        """The open model: wait in the pool for an iteration, run it, come back."""
        go = run.go = run.go or asyncio.Event()
        while not run.stop.is_set():
            self._enqueue(run)
            await go.wait()
            go.clear()
            if run.stop.is_set():
                return
            await self.passes.one(run, None)

    # -- the open model ------------------------------------------------------------

    async def _dispatch(self) -> None:
        """Start each of our iterations when it is due, on a free user, or count it dropped."""
        assert self.started_at is not None
        after = -1.0
        while not self.stop_event.is_set():
            plan = self.shape.arrival
            if plan is None:
                return
            nxt = plan.next_for(after, self.slot)
            if nxt is None:
                return  # the rate plan is over; the run ends with the shape
            _, when = nxt
            delay = self.started_at + when - time.time()
            if delay > 0 and await self._wait_until(self.started_at + when):
                return
            after = when
            self._start_iteration()

    def _enqueue(self, run: UserRun) -> None:
        if not run.queued:
            run.queued = True
            self._free.append(run)

    def _start_iteration(self) -> None:
        while self._free:
            run = self._free.popleft()
            run.queued = False
            if not run.stop.is_set():
                run.wake()
                return
        self.recorder.dropped()
        if not self._dropped_logged:
            self._dropped_logged = True
            log.warning("an iteration was due and every user was busy: dropped (add users with -u; logged once)")

    # -- the end ---------------------------------------------------------------------

    async def _drain(self) -> None:
        for run in list(self.running.values()):
            run.stop.set()
            run.wake()
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=STOP_GRACE_S)
            for t in still:
                t.cancel()
            await asyncio.gather(*still, return_exceptions=True)
            # Cancelled users still owe their on_stop transactions, bounded.
            owed = [self._tasks[t] for t in still]
            await asyncio.gather(*(self._finish_cancelled(run) for run in owed), return_exceptions=True)

    async def _finish_cancelled(self, run: UserRun) -> None:
        try:
            await self.passes.on_stop(run.user, run.planned)
        finally:
            await run.user.close()
