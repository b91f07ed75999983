"""The open model's schedule: when each scenario iteration is due (pure).

``--arrival-rate 30`` starts 30 iterations a second across the gaggle whatever
the response times (k6's constant-arrival-rate); ``--arrival-rate "10,30s;50,1m"``
moves the rate linearly from the previous one (0 at the start) to each step's
rate over its time (k6's ramping-arrival-rate). Iteration ``q`` (0-based,
gaggle-wide) is due when the cumulative arrivals reach ``q``, so the first is
due at the start. A process runs the iterations of its slot (``q`` in the same
progression as its users), so the gaggle's schedule is split exactly, without
double counting and without coordination.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InvalidOption
from .shape import EPS, MAX_PLAN_S, WHOLE, Slot, parse_plan

MAX_RATE = 1_000_000.0


@dataclass(frozen=True)
class RateSegment:
    at: float
    start: float  # iterations per second at ``at``
    end: float  # ... at ``at + over``
    over: float  # may be inf (a constant rate until the run stops)

    def arrivals(self, dt: float) -> float:
        """Iterations due in the first ``dt`` seconds of this segment."""
        dt = min(max(dt, 0.0), self.over)
        if dt == 0.0:
            return 0.0
        if self.end == self.start or math.isinf(self.over):
            return self.start * dt
        return self.start * dt + (self.end - self.start) * dt * dt / (2.0 * self.over)

    def time_for(self, x: float) -> float | None:
        """Seconds into the segment when ``x`` more iterations are due; None if not within it."""
        if x <= EPS:
            return 0.0
        if self.end == self.start or math.isinf(self.over):
            if self.start <= 0:
                return None
            dt = x / self.start
        else:
            a = (self.end - self.start) / (2.0 * self.over)
            disc = self.start * self.start + 4.0 * a * x
            if disc < 0:
                return None
            root = self.start + math.sqrt(disc)
            if root <= 0:
                return None
            dt = 2.0 * x / root  # the stable form of the quadratic's positive root
        return dt if dt <= self.over + EPS else None


@dataclass(frozen=True)
class ArrivalPlan:
    segments: tuple[RateSegment, ...]
    text: str = ""

    @property
    def end_s(self) -> float | None:
        last = self.segments[-1].at + self.segments[-1].over if self.segments else 0.0
        return None if math.isinf(last) else last

    def due_by(self, t: float) -> float:
        """Cumulative iterations due by ``t`` (seconds after the start)."""
        total = 0.0
        for seg in self.segments:
            if t <= seg.at:
                break
            total += seg.arrivals(t - seg.at)
        return total

    def time_of(self, q: int) -> float | None:
        """When iteration ``q`` is due, or None when the plan ends first."""
        done = 0.0
        for seg in self.segments:
            whole = seg.arrivals(seg.over) if not math.isinf(seg.over) else math.inf
            if q <= done + whole + EPS:
                dt = seg.time_for(q - done)
                if dt is not None:
                    return seg.at + dt
            done += whole
        return None

    def next_for(self, t: float, slot: Slot = WHOLE) -> tuple[int, float] | None:
        """``slot``'s first iteration due strictly after ``t``: (q, when)."""
        q0 = max(0, math.ceil(self.due_by(t) - EPS))
        for _ in range(3):  # rounding can leave q0 at or just before t
            first = q0 if q0 >= slot.offset else slot.offset
            q = slot.offset + slot.stride * math.ceil((first - slot.offset) / slot.stride)
            when = self.time_of(q)
            if when is None:
                return None
            if when > t + EPS or (t < 0 and q == 0):
                return q, when
            q0 = q + 1
        return None

    def rate_at(self, t: float) -> float:
        for seg in reversed(self.segments):
            if t >= seg.at:
                if math.isinf(seg.over) or seg.over == 0:
                    return seg.end
                f = min((t - seg.at) / seg.over, 1.0)
                return seg.start + (seg.end - seg.start) * f
        return 0.0


def parse_arrival(option: str, text: str, run_time_s: float | None) -> ArrivalPlan:
    """``"30"`` (constant, until ``run_time_s`` or a stop) or a rate plan ``"10,30s;50,1m"``."""
    raw = str(text).strip()
    if "," not in raw and ";" not in raw:
        try:
            rate = float(raw)
        except ValueError:
            raise InvalidOption(option, text, "The arrival rate must be a number of iterations per second, "
                                "or a plan like 10,30s;50,1m.") from None  # fmt: skip
        if not math.isfinite(rate) or rate <= 0:
            raise InvalidOption(option, text, "The arrival rate must be greater than 0 (and finite).")
        if rate > MAX_RATE:
            raise InvalidOption(option, text, f"The arrival rate must be at most {MAX_RATE:,.0f} per second.")
        over = run_time_s if run_time_s is not None else math.inf
        return ArrivalPlan((RateSegment(0.0, rate, rate, over),), raw)
    steps = parse_plan(option, raw, what="rate")
    if any(r > MAX_RATE for r, _ in steps):
        raise InvalidOption(option, text, f"An arrival rate must be at most {MAX_RATE:,.0f} per second.")
    segments = []
    at, rate = 0.0, 0.0
    for target, secs in steps:
        segments.append(RateSegment(at, rate, target, secs))
        at, rate = at + secs, target
    if at > MAX_PLAN_S:
        raise InvalidOption(option, text, "The plan is longer than 30 days.")
    return ArrivalPlan(tuple(segments), raw)
