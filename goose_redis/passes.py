"""What one user does: passes over its scenario, each transaction, the pauses, on_stop.

Kept apart from the runner, which decides *which* users run and *when*: here is only
what a running user does and records, including the coordinated-omission backfill
of a stalled pass (``co.py``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING

from .co import Cadence, backfill
from .recorder import Recorder
from .scenario import PlannedScenario
from .throttle import RunStopped
from .user import User

if TYPE_CHECKING:
    from .runner import RunOptions

log = logging.getLogger("goose_redis.runner")

ON_STOP_TIMEOUT_S = 10.0


class UserRun:
    """One launched user and what the engine needs to steer it."""

    __slots__ = ("user", "planned", "stop", "go", "task", "completed", "queued")

    def __init__(self, user: User, planned: PlannedScenario) -> None:
        self.user = user
        self.planned = planned
        self.stop = asyncio.Event()  # leave after the current transaction
        # Open model only: run one iteration (also set on stop, to wake it). None in the closed
        # model: an Event costs about 850 bytes, a tenth of a user.
        self.go: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None
        self.completed = False  # ran its --iterations
        self.queued = False  # open model: waiting in the pool for an iteration

    def wake(self) -> None:
        if self.go is not None:
            self.go.set()


class Passes:
    """Runs users' passes and transactions and records them."""

    def __init__(self, recorder: Recorder, options: RunOptions) -> None:
        self.recorder = recorder
        self.options = options
        self._logged_errors: set[str] = set()

    async def closed_loop(self, run: UserRun) -> None:
        """The closed model: pass after pass over the scenario until told to stop."""
        iterations = self.options.iterations
        done = 0
        cadence = Cadence(self.options.co_mitigation) if self.options.co_mitigation != "disabled" else None
        while not run.stop.is_set():
            if not run.planned.schedule:
                await run.stop.wait()
                return
            if await self.one(run, cadence):
                done += 1
                if iterations is not None and done >= iterations:
                    run.completed = True
                    return
            await asyncio.sleep(0)  # a transaction that never awaits must not starve the loop

    async def one(self, run: UserRun, cadence: Cadence | None) -> bool:
        """One iteration of the user's scenario; True when it ran to its end."""
        user, planned = run.user, run.planned
        wait = planned.scenario.wait
        t0 = time.perf_counter()
        failed = False
        user.slowest = None
        last = len(planned.schedule) - 1
        for pos, ti in enumerate(planned.schedule):
            failed |= not await self.transaction(user, planned, ti)
            # A stop ends the pass early; after its last transaction, the pass is done.
            paused = wait is not None and wait[1] > 0
            if run.stop.is_set() or (paused and await self.pause(run, random.uniform(*wait))):  # type: ignore[misc]
                if pos < last:
                    return False
                break
        ms = (time.perf_counter() - t0) * 1000.0
        self.recorder.scenario(planned.index, ms, not failed, user)
        if cadence is not None:
            expected = cadence.finish_pass(ms)
            if expected is not None and user.slowest is not None:
                self.recorder.backfill(user.slowest, backfill(user.slowest.elapsed_ms, expected))
        return True

    async def pause(self, run: UserRun, seconds: float) -> bool:
        # asyncio.timeout, not wait_for: no second task per waiting user.
        try:
            async with asyncio.timeout(seconds):
                await run.stop.wait()
        except TimeoutError:
            return False
        return True

    async def on_stop(self, user: User, planned: PlannedScenario) -> None:
        if not planned.on_stop:
            return
        try:
            async with asyncio.timeout(ON_STOP_TIMEOUT_S):
                for ti in planned.on_stop:
                    await self.transaction(user, planned, ti)
        except TimeoutError:
            log.warning("user %d: on_stop transactions took longer than %ss", user.index, ON_STOP_TIMEOUT_S)

    async def transaction(self, user: User, planned: PlannedScenario, ti: int) -> bool:
        tx = planned.scenario.transactions[ti]
        user.transaction_name = tx.display_name
        error: str | None = None
        t0 = time.perf_counter()
        try:
            await tx.function(user)
        except asyncio.CancelledError:
            user.flush()
            raise
        except RunStopped:  # the run stopped while a request waited for its throttle slot
            user.flush()
            return False
        except Exception as exc:  # a broken transaction is counted, and the user goes on
            error = f"{exc.__class__.__name__}: {exc}"[:200]
            key = f"{planned.scenario.name}/{tx.display_name}/{exc.__class__.__name__}"
            if key not in self._logged_errors:
                self._logged_errors.add(key)
                log.warning("transaction %r raised %s (logged once)", tx.display_name, error, exc_info=True)
        ms = (time.perf_counter() - t0) * 1000.0
        failed = user.flush()
        success = error is None and not failed
        self.recorder.transaction(planned.index, ti, ms, success, error, user)
        return success
