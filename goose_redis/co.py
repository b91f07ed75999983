"""Coordinated-omission mitigation (Goose's ``--co-mitigation``), as pure bookkeeping.

A closed-loop user that waits on a stalled server sends nothing meanwhile, so the
stall shows up as one slow request instead of the many slow requests a steady
client would have seen (wrk2's "coordinated omission"). Each user learns its usual
*cadence*: how long one pass over its scenario takes. When a pass takes more than
twice that, the slowest request of the pass is backfilled with the samples the
missed passes would have measured: ``v - c, v - 2c, ...`` down to ``c`` (the
HdrHistogram correction, with the user's cadence ``c`` as the expected interval).
The synthetic samples go to separate rows, so reports show raw and corrected
figures side by side. The cadence is the average, minimum or maximum of the normal
passes so far (the mode); stalled passes do not move it.
"""

from __future__ import annotations

MODES = ("disabled", "average", "minimum", "maximum")
STALL_FACTOR = 2.0
MIN_PASSES = 2  # passes before the cadence is trusted
MAX_BACKFILL = 10_000  # per stall: bounds the work a pathological stall can cause


class Cadence:
    __slots__ = ("mode", "passes", "total_ms", "min_ms", "max_ms")

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.passes = 0
        self.total_ms = 0.0
        self.min_ms = float("inf")
        self.max_ms = 0.0

    def expected_ms(self) -> float | None:
        if self.passes < MIN_PASSES:
            return None
        if self.mode == "minimum":
            return self.min_ms
        if self.mode == "maximum":
            return self.max_ms
        return self.total_ms / self.passes

    def finish_pass(self, pass_ms: float) -> float | None:
        """Record one pass; return the cadence to backfill with when it was a stall."""
        expected = self.expected_ms()
        if expected is not None and expected > 0 and pass_ms > STALL_FACTOR * expected:
            return expected
        self.passes += 1
        self.total_ms += pass_ms
        self.min_ms = min(self.min_ms, pass_ms)
        self.max_ms = max(self.max_ms, pass_ms)
        return None


def backfill(value_ms: float, cadence_ms: float) -> list[float]:
    """The samples a steady client would have measured while ``value_ms`` went by."""
    out: list[float] = []
    if cadence_ms <= 0:
        return out
    v = value_ms - cadence_ms
    while v >= cadence_ms and len(out) < MAX_BACKFILL:
        out.append(v)
        v -= cadence_ms
    return out
