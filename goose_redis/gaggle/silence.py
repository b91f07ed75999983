"""How long the other side has been silent, counting only time we could watch it (pure).

A heartbeat that has not changed for ten seconds means the other side is gone only
if we were looking for those ten seconds. If our own process was frozen (SIGSTOP,
a long GC, a laptop lid), or Redis did not answer, we saw nothing: that time says
nothing about the other side. So silence grows between two successful reads by at
most ``cap_s`` (a little more than the read interval), and not at all across a read
that failed.
"""

from __future__ import annotations

from typing import Any


class Silence:
    __slots__ = ("cap_s", "quiet_s", "_value", "_last_read", "_seen")

    def __init__(self, cap_s: float) -> None:
        self.cap_s = cap_s
        self.quiet_s = 0.0
        self._value: Any = None
        self._seen = False
        self._last_read: float | None = None

    def observe(self, value: Any, now: float) -> float:
        """A successful read at ``now`` (monotonic) found ``value`` (None: nothing there);
        return the silence so far."""
        if self._last_read is not None:
            self.quiet_s += min(max(now - self._last_read, 0.0), self.cap_s)
        self._last_read = now
        if value is not None and (not self._seen or value != self._value):  # None: nothing there, no news
            self._seen = True
            self._value = value
            self.quiet_s = 0.0
        return self.quiet_s

    def blind(self) -> None:
        """A read failed (or we could not read): the time until the next read is not counted."""
        self._last_read = None

    def reset(self) -> None:
        """Heard from the other side some other way (for example a message it sent)."""
        self.quiet_s = 0.0
