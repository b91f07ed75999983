"""``--throttle-requests``: pace a process's requests at its share of the gaggle's rate.

Each request takes the next free slot (``interval`` after the previous one) and
waits for it before it is sent, so the rate holds without bursts and the wait is
never part of a response time. The rate follows the shape: a Worker's share of the
gaggle-wide limit changes when users or Workers come and go.
"""

from __future__ import annotations

import asyncio
import time


class RunStopped(BaseException):
    """The run stopped while a request waited for its slot: it is not sent. A BaseException,
    like CancelledError, so a transaction's own ``except Exception`` cannot swallow it."""


class Throttle:
    def __init__(self, rate: float | None = None) -> None:
        self.rate: float | None = None
        self._next = 0.0  # monotonic time of the next free slot
        self._changed = asyncio.Event()
        self._stopped = False
        self.set_rate(rate)

    def set_rate(self, rate: float | None) -> None:
        """``None``: no limit; ``0``: hold every request until the rate rises."""
        if rate == self.rate:
            return
        self.rate = rate
        self._next = time.monotonic()
        self._changed.set()
        self._changed = asyncio.Event()

    def stop(self) -> None:
        """Release every waiter with RunStopped: a request not yet sent is not sent after the stop."""
        self._stopped = True
        self._changed.set()

    async def acquire(self) -> None:
        while True:
            if self._stopped:
                raise RunStopped
            rate = self.rate
            if rate is None:
                return
            changed = self._changed
            if rate <= 0:
                await changed.wait()
                continue
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + 1.0 / rate
            if slot <= now:
                return
            try:
                await asyncio.wait_for(changed.wait(), slot - now)
            except TimeoutError:
                if self._stopped:
                    raise RunStopped from None
                return
            # The rate changed (or the run stopped) while we waited: take a new slot.
