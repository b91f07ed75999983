"""The load shape: how many users run at each moment, and which ones, as pure functions.

Every run is a *shape* (as Goose represents every run as a test plan): a chain of
segments over run time, each moving the gaggle-wide user count from ``start`` to
``end`` over ``over`` seconds in single steps. A plan step follows its line
exactly: the count is the floor of the linear ramp, so the last step lands at the
step's end and the next step starts from there (``"4,2s;0,2s"`` really holds 4
users for a moment). A hatch-rate ramp (``-u/-r``, or a ``users N`` command) starts
at once, as Goose launches its first user at once: ``-u 8 -r 2 -t 60s`` is one
segment 0 -> 8 with a user every 0.5 s from 0 s, and an end 60 s after the last
launch; ``--test-plan "10,1m;10,5m;0,0s"`` is three segments. A control command (``users N``,
``hatch-rate R``, ``test-plan P``) cuts the chain at *now* and appends new segments,
so everything already done stays true.

*Which* users run is fixed by their gaggle-wide index ``i``: the first ``U`` indexes
run when the count is ``U``. A *slot* is an arithmetic progression of indexes
(``offset + stride * k``): Worker ``k`` of ``n`` holds ``Slot(k, n)``, and process
``j`` of ``m`` on that Worker holds ``Slot(k, n).sub(j, m)``. So a Worker computes its
users from the shape and its position alone, a lost Worker's users move to the others
when the Manager publishes the shape with one Worker fewer, and the newest users
(highest indexes) are the first to stop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .durations import parse_duration
from .errors import InvalidOption

EPS = 1e-9
MAX_PLAN_USERS = 1_000_000
MAX_PLAN_S = 30 * 86400.0

if TYPE_CHECKING:
    from .arrival import ArrivalPlan


@dataclass(frozen=True)
class Slot:
    """The gaggle-wide user indexes ``offset, offset + stride, ...`` one process runs."""

    offset: int = 0
    stride: int = 1

    @classmethod
    def of(cls, position: int, count: int) -> Slot:
        """Position ``position`` (0-based) of ``count`` Workers."""
        return cls(position, count)

    def sub(self, position: int, count: int) -> Slot:
        """Process ``position`` of ``count`` sharing this slot (every ``count``-th of its users)."""
        return Slot(self.offset + self.stride * position, self.stride * count)

    def count(self, users: int) -> int:
        """How many of the first ``users`` indexes are ours."""
        return 0 if users <= self.offset else (users - self.offset + self.stride - 1) // self.stride

    def index(self, k: int) -> int:
        """Our ``k``-th user's gaggle-wide index."""
        return self.offset + self.stride * k

    def owns(self, index: int) -> bool:
        return index >= self.offset and (index - self.offset) % self.stride == 0


WHOLE = Slot()  # a standalone process runs every user
IDLE = Slot(2**62, 1)  # a Worker without a slot (the Manager moved its users elsewhere) runs none


@dataclass(frozen=True)
class Segment:
    at: float  # seconds after the run's start
    start: int  # users just before ``at``
    end: int
    over: float  # seconds until the last step
    at_once: bool = False  # the first step at ``at`` (a hatch rate); else the floor of the line

    @property
    def steps(self) -> int:
        return abs(self.end - self.start)

    @property
    def finish(self) -> float:
        return self.at + self.over

    def step_time(self, j: int) -> float:
        """When step ``j`` (0-based) happens; the last one at ``at + over``."""
        d = self.steps
        if self.over <= 0 or d == 0:
            return self.at
        if self.at_once:
            return self.at + self.over * j / (d - 1) if d > 1 else self.at
        return self.at + self.over * (j + 1) / d

    def done_by(self, t: float) -> int:
        """Steps taken by ``t`` (inclusive)."""
        d = self.steps
        if d == 0 or t < self.at - EPS:
            return 0
        if self.over <= 0 or (self.at_once and d == 1):
            return d
        if self.at_once:
            return min(d, int(math.floor((t - self.at) * (d - 1) / self.over + EPS)) + 1)
        return min(d, int(math.floor((t - self.at) * d / self.over + EPS)))

    def users_at(self, t: float) -> int:
        n = self.done_by(t)
        return self.start + n if self.end >= self.start else self.start - n


@dataclass(frozen=True)
class Shape:
    """Users over run time, plus what else bounds the run. Times are seconds after the start."""

    segments: tuple[Segment, ...] = ()
    end_s: float | None = None  # the run stops here; None: when stopped, or iterations are done
    reset_s: float | None = None  # Goose's metrics reset (the end of the initial ramp-up); None: never
    hatch_rate: float = 1.0  # users per second for ``users N`` commands
    throttle: float | None = None  # requests per second, gaggle-wide
    arrival: ArrivalPlan | None = None  # open model: iterations per second, gaggle-wide

    def active(self, t: float) -> int | None:
        """Index of the segment in force at ``t``."""
        found = None
        for i, seg in enumerate(self.segments):
            if seg.at <= t + EPS:
                found = i
            else:
                break
        return found

    def users_at(self, t: float) -> int:
        i = self.active(t)
        return 0 if i is None else self.segments[i].users_at(t)

    @property
    def peak(self) -> int:
        return max((max(s.start, s.end) for s in self.segments), default=0)

    def ramp_done_s(self) -> float | None:
        """When the initial ramp-up ends (its last launch), for Goose's metrics reset."""
        return self.reset_s

    def next_change(self, t: float, slot: Slot = WHOLE) -> float | None:
        """The first moment after ``t`` when ``slot``'s user count changes, or None."""
        if not self.segments:
            return None
        first = self.active(t) or 0
        held = slot.count(self.users_at(t))
        for i in range(first, len(self.segments)):
            seg = self.segments[i]
            limit = self.segments[i + 1].at if i + 1 < len(self.segments) else math.inf
            found = _first_step_changing(seg, slot, held, t)
            if found is not None and found <= limit + EPS:  # a step at the boundary still counts
                return found
        return None

    def share(self, t: float, slot: Slot) -> float:
        """``slot``'s part of the gaggle-wide users at ``t`` (for the throttle)."""
        users = self.users_at(t)
        return slot.count(users) / users if users > 0 else 0.0


def _first_step_changing(seg: Segment, slot: Slot, held: int, after: float) -> float | None:
    d = seg.steps
    if d == 0:
        return None
    j_min = seg.done_by(after)  # the first step strictly after ``after``
    if seg.end > seg.start:
        need = slot.index(held) + 1  # the count at which our next user is due
        j = max(need - seg.start - 1, j_min)
    else:
        if held == 0:
            return None
        top = slot.index(held - 1)  # our newest user stops when the count drops to it
        j = max(seg.start - 1 - top, j_min)
    return seg.step_time(j) if j < d else None


def parse_plan(option: str, text: str, what: str = "users") -> list[tuple[float, float]]:
    """``"10,1m;10,5m;0,0s"`` -> [(10, 60.0), (10, 300.0), (0, 0.0)]; InvalidOption if not."""
    steps: list[tuple[float, float]] = []
    parts = [p.strip() for p in str(text).split(";")]
    if parts and parts[-1] == "" and len(parts) > 1:
        parts.pop()  # a trailing ';' is harmless
    for part in parts:
        fields = [f.strip() for f in part.split(",")]
        if len(fields) != 2 or not fields[0] or not fields[1]:
            raise InvalidOption(
                option, text, f"Each step is {what.upper()},TIME (like 10,1m), separated by ';': {part!r} is not."
            )
        try:
            value = float(fields[0]) if what != "users" else float(int(fields[0]))
        except ValueError:
            kind = "a whole number" if what == "users" else "a number"
            raise InvalidOption(option, text, f"{fields[0]!r} in step {part!r} is not {kind} of {what}.") from None
        if not math.isfinite(value) or value < 0:
            raise InvalidOption(option, text, f"{fields[0]!r} in step {part!r} must be 0 or more.")
        if what == "users" and value > MAX_PLAN_USERS:
            raise InvalidOption(option, text, f"{fields[0]!r} users is more than {MAX_PLAN_USERS:,}.")
        try:
            secs = parse_duration(fields[1])
        except ValueError as exc:
            raise InvalidOption(option, text, f"{fields[1]!r} in step {part!r} is not a duration: {exc}.") from None
        if secs > MAX_PLAN_S:
            raise InvalidOption(option, text, f"the step {part!r} is longer than 30 days.")
        steps.append((value, secs))
    total = sum(s for _, s in steps)
    if total <= 0:
        raise InvalidOption(option, text, "The plan must last longer than 0 seconds.")
    if total > MAX_PLAN_S:
        raise InvalidOption(option, text, "The plan is longer than 30 days.")
    return steps


def chain(at: float, users: int, steps: list[tuple[float, float]]) -> tuple[list[Segment], float]:
    """Segments for plan ``steps`` starting at ``at`` with ``users`` running; and the plan's end."""
    segments = []
    for target, secs in steps:
        segments.append(Segment(at, users, int(target), secs))
        at, users = at + secs, int(target)
    return segments, at


def simple(users: int, interval_s: float, run_time_s: float | None, *, reset: bool = True) -> Shape:
    """``-u/-r`` (or ``-s``) and ``-t``: user ``i`` at ``i * interval``, the run time after the last."""
    ramp = (users - 1) * interval_s
    end = ramp + run_time_s if run_time_s is not None else None
    rate = 1.0 / interval_s if interval_s > 0 else float(users)
    return Shape((Segment(0.0, 0, users, ramp, at_once=True),), end, ramp if reset else None, rate)


def planned(steps: list[tuple[float, float]], hatch_rate: float = 1.0) -> Shape:
    """``--test-plan``: no metrics reset (Goose's plan "10,1m;10,5m;0,0s" equals -u/-s/-t with
    --no-reset-metrics), the run ends with the plan."""
    segments, end = chain(0.0, 0, steps)
    return Shape(tuple(segments), end, None, hatch_rate)


# -- steering: what control commands do to a shape (times are seconds after the start) ------


def _cut(shape: Shape, now: float) -> tuple[list[Segment], int]:
    """The segments in force up to ``now`` (later ones dropped) and the users at ``now``."""
    return [s for s in shape.segments if s.at <= now + EPS], shape.users_at(now)


def with_users(shape: Shape, now: float, users: int) -> Shape:
    """Move to ``users`` from now at the current hatch rate, then hold until the run's end."""
    kept, current = _cut(shape, now)
    steps = abs(users - current)
    over = (steps - 1) / shape.hatch_rate if steps > 1 else 0.0
    kept.append(Segment(now, current, users, over, at_once=True))
    reset = shape.reset_s if shape.reset_s is None or shape.reset_s <= now else now
    return replace(shape, segments=tuple(kept), reset_s=reset)


def with_hatch_rate(shape: Shape, now: float, rate: float) -> Shape:
    """A new hatch rate; a ramp in progress goes on to its target at the new rate."""
    i = shape.active(now)
    shape = replace(shape, hatch_rate=rate)
    if i is None:
        return shape
    seg = shape.segments[i]
    if seg.users_at(now) == seg.end or i + 1 < len(shape.segments):
        return shape  # no ramp in progress (plan steps keep their own times)
    return with_users(shape, now, seg.end)


def with_run_time(shape: Shape, now: float, run_time_s: float) -> Shape:
    return replace(shape, end_s=now + run_time_s)


def with_plan(shape: Shape, now: float, steps: list[tuple[float, float]]) -> Shape:
    kept, current = _cut(shape, now)
    added, end = chain(now, current, steps)
    reset = shape.reset_s if shape.reset_s is None or shape.reset_s <= now else now
    return replace(shape, segments=tuple(kept + added), end_s=end, reset_s=reset)


def with_throttle(shape: Shape, throttle: float | None) -> Shape:
    return replace(shape, throttle=throttle)


@dataclass(frozen=True)
class Step:
    """One row of the report's plan table (Goose's test-plan overview)."""

    action: str  # "increase", "decrease" or "maintain"
    start: int
    end: int
    at: float
    until: float


def history(shape: Shape, until: float) -> list[Step]:
    """The steps the run went through up to ``until``: each segment as far as it got, and the
    holds between them."""
    if shape.end_s is not None:
        until = min(until, shape.end_s)  # after its end the run only drains: not a step
    out: list[Step] = []
    segs = [s for s in shape.segments if s.at <= until + EPS]
    for i, seg in enumerate(segs):
        stop = min(segs[i + 1].at if i + 1 < len(segs) else until, until)
        moved_until = min(seg.finish, stop) if seg.steps else seg.at
        reached = seg.users_at(moved_until)
        if seg.steps and reached != seg.start:
            action = "increase" if seg.end > seg.start else "decrease"
            out.append(Step(action, seg.start, reached, seg.at, moved_until))
        if stop > moved_until + EPS:
            out.append(Step("maintain", reached, reached, moved_until, stop))
    merged: list[Step] = []
    for step in out:  # neighbouring holds at the same count read as one
        if merged and step.action == "maintain" == merged[-1].action and step.start == merged[-1].end:
            merged[-1] = replace(merged[-1], until=step.until)
        elif step.until > step.at + EPS or step.action != "maintain":
            merged.append(step)
    return merged
