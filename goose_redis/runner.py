"""The local engine: launch users on a schedule, run them, stop them, drain.

It knows nothing of Redis. A Gaggle Worker runs the same engine with its
share of the launch plan and a start time agreed through Redis.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from .pool import HttpPool
from .recorder import Recorder
from .scenario import LoadTest, PlannedScenario
from .user import User

log = logging.getLogger("goose_redis.runner")

# On stop, users finish the request in flight for up to this long, so what
# the target completed is what we count; then they are cancelled.
STOP_GRACE_S = 5.0
ON_STOP_TIMEOUT_S = 10.0
TICK_S = 0.5


@dataclass(frozen=True)
class Launch:
    user_index: int  # index in the whole gaggle
    at_s: float  # seconds after the start
    scenario_index: int


def launch_interval(users: int, hatch_rate: float | None, startup_time_s: float | None) -> float:
    """Seconds between two launches, gaggle-wide."""
    if startup_time_s is not None:
        return startup_time_s / users if users > 1 else 0.0
    return 1.0 / hatch_rate if hatch_rate else 0.0


def launch_plan(
    load_test: LoadTest, total_users: int, interval_s: float, worker_index: int = 0, worker_count: int = 1
) -> list[Launch]:
    """User ``i`` of the gaggle starts at ``i * interval`` on Worker ``i % workers``:
    each Worker launches every ``workers``-th user, staggered, so the gaggle-wide
    rate is the one asked for and the first ``users % workers`` Workers get one more."""
    return [
        Launch(i, i * interval_s, load_test.scenario_for_user(i))
        for i in range(worker_index, total_users, worker_count)
    ]


@dataclass(frozen=True)
class RunOptions:
    host: str | None
    timeout_s: float = 60.0
    iterations: int | None = None
    run_time_s: float | None = None
    ramp_end_s: float = 0.0  # when the whole gaggle has launched its users
    reset_metrics: bool = True
    source: str = ""  # series source: the Worker id in a gaggle


class Runner:
    def __init__(self, load_test: LoadTest, plan: list[Launch], options: RunOptions, recorder: Recorder) -> None:
        self.load_test = load_test
        self.plan = plan
        self.options = options
        self.recorder = recorder
        self.pool = HttpPool(options.timeout_s)  # every user's connections; cookies stay per user
        self.stop_event = asyncio.Event()
        self.stop_reason = ""
        self.users: list[User] = []
        self.active = 0
        self.started_at: float | None = None
        self.ramp_done_at: float | None = None
        self.stopping_at: float | None = None
        self.ended_at: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._logged_errors: set[str] = set()
        self._plan_done = asyncio.Event()

    def stop(self, reason: str) -> None:
        if not self.stop_event.is_set():
            self.stop_reason = reason
            self.stop_event.set()

    @property
    def launched(self) -> int:
        return len(self.users)

    async def _wait_until(self, deadline: float) -> bool:
        """Sleep until ``deadline`` (epoch); True if stopped first."""
        delay = deadline - time.time()
        if delay > 0:
            try:
                await asyncio.wait_for(self.stop_event.wait(), delay)
            except TimeoutError:
                pass
        return self.stop_event.is_set()

    async def _wait_for(self, event: asyncio.Event) -> bool:
        """Wait for ``event``; True if stopped first."""
        if not event.is_set():
            waiters = [asyncio.create_task(event.wait()), asyncio.create_task(self.stop_event.wait())]
            _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
        return self.stop_event.is_set()

    async def run(
        self,
        start_at: float,
        on_ramp_done: Callable[[], None] | None = None,
        on_tick: Callable[[float], None] | None = None,
    ) -> None:
        if await self._wait_until(start_at):
            self.started_at = self.ended_at = time.time()
            return
        self.started_at = start_at
        ticker = asyncio.create_task(self._tick(on_tick))
        launcher = asyncio.create_task(self._launch(start_at))
        try:
            ramp_stopped = await self._wait_until(start_at + self.options.ramp_end_s)
            if not ramp_stopped:
                # The last launch is due at the same instant: let it happen first.
                ramp_stopped = await self._wait_for(self._plan_done)
            if not ramp_stopped:
                self.ramp_done_at = time.time()
                log.info("all %d users launched", self.launched)
                if on_ramp_done is not None:
                    on_ramp_done()
                if self.options.run_time_s is not None:
                    if not await self._wait_until(self.ramp_done_at + self.options.run_time_s):
                        self.stop("run time elapsed")
                await self.stop_event.wait()
            self.stopping_at = time.time()
            log.info("stopping: %s", self.stop_reason)
            launcher.cancel()
            await asyncio.gather(launcher, return_exceptions=True)
            await self._drain()
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            self._tick_once()
            self.ended_at = time.time()
            await self.pool.close()  # after the drain: every user has closed its session

    async def _launch(self, start_at: float) -> None:
        for launch in self.plan:
            if await self._wait_until(start_at + launch.at_s):
                return
            planned = self.load_test.planned[launch.scenario_index]
            host = planned.scenario.host or self.options.host or ""
            user = User(launch.user_index, planned.scenario, launch.scenario_index, host, self.recorder,
                        self.options.timeout_s, self.pool)  # fmt: skip
            self.users.append(user)
            self.active += 1
            # Sampled at each launch as well as each tick, so the users series follows the ramp-up.
            self.recorder.metrics.series.set_users(time.time(), self.active, self.options.source)
            log.debug("launched user %d (%s)", launch.user_index, planned.scenario.name)
            self._tasks.append(asyncio.create_task(self._user_main(user, planned)))
        self._plan_done.set()
        if self.options.iterations is not None:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.stop(f"every user ran {self.options.iterations} iteration(s)")

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

    async def _user_main(self, user: User, planned: PlannedScenario) -> None:
        try:
            for ti in planned.on_start:
                await self._run_transaction(user, planned, ti)
            iteration = 0
            wait = planned.scenario.wait
            while not self.stop_event.is_set():
                if not planned.schedule:
                    await self.stop_event.wait()
                    break
                t0 = time.perf_counter()
                failed = False
                for ti in planned.schedule:
                    failed |= not await self._run_transaction(user, planned, ti)
                    if self.stop_event.is_set():
                        break
                    if wait is not None and wait[1] > 0:
                        if await self._pause(random.uniform(*wait)):
                            break
                else:
                    self.recorder.scenario(planned.index, (time.perf_counter() - t0) * 1000.0, not failed)
                    iteration += 1
                    if self.options.iterations is not None and iteration >= self.options.iterations:
                        break
                await asyncio.sleep(0)  # a transaction that never awaits must not starve the loop
            await self._run_on_stop(user, planned)
        finally:
            self.active -= 1
            await user.close()

    async def _pause(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.stop_event.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def _run_on_stop(self, user: User, planned: PlannedScenario) -> None:
        if not planned.on_stop:
            return
        try:
            async with asyncio.timeout(ON_STOP_TIMEOUT_S):
                for ti in planned.on_stop:
                    await self._run_transaction(user, planned, ti)
        except TimeoutError:
            log.warning("user %d: on_stop transactions took longer than %ss", user.index, ON_STOP_TIMEOUT_S)

    async def _run_transaction(self, user: User, planned: PlannedScenario, ti: int) -> bool:
        tx = planned.scenario.transactions[ti]
        user.transaction_name = tx.display_name
        error: str | None = None
        t0 = time.perf_counter()
        try:
            await tx.function(user)
        except asyncio.CancelledError:
            user.flush()
            raise
        except Exception as exc:  # a broken transaction is counted, and the user goes on
            error = f"{exc.__class__.__name__}: {exc}"[:200]
            key = f"{planned.scenario.name}/{tx.display_name}/{exc.__class__.__name__}"
            if key not in self._logged_errors:
                self._logged_errors.add(key)
                log.warning("transaction %r raised %s (logged once)", tx.display_name, error, exc_info=True)
        ms = (time.perf_counter() - t0) * 1000.0
        failed = user.flush()
        success = error is None and not failed
        self.recorder.transaction(planned.index, ti, ms, success, error)
        return success

    async def _drain(self) -> None:
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=STOP_GRACE_S)
            for t in still:
                t.cancel()
            await asyncio.gather(*still, return_exceptions=True)
            # Cancelled users still owe their on_stop transactions, bounded.
            owed = [u for u, t in zip(self.users, self._tasks, strict=True) if t in still]
            await asyncio.gather(*(self._finish_cancelled(u) for u in owed), return_exceptions=True)

    async def _finish_cancelled(self, user: User) -> None:
        try:
            await self._run_on_stop(user, self.load_test.planned[user.scenario_index])
        finally:
            await user.close()
