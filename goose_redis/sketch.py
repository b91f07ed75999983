"""A DDSketch of latencies (1 % relative accuracy), sparse, and its compact wire form.

DDSketch's logarithmic mapping: a value ``v`` lands in bin ``ceil(log_gamma(v))`` with
``gamma = (1 + a) / (1 - a)``, and a bin stands for ``2 gamma^k / (1 + gamma)``, within
``a`` of every value in it. The bins live in a dict (only occupied ones), which makes
``add`` a dict update on the hot path and ships only what is occupied: the wire size
follows the number of distinct latency bins, never the number of samples nor the gap
between the fastest and the slowest. Quantiles follow the ddsketch package exactly
(rank ``q * (count - 1)``, lower bin). Exact count/sum/min/max live beside the sketch
in ``RowStats``.
"""

from __future__ import annotations

import math

RELATIVE_ACCURACY = 0.01
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_MULTIPLIER = 1.0 / math.log(_GAMMA)
_VALUE_FACTOR = 2.0 / (1.0 + _GAMMA)

# Milliseconds: at or below MIN_VALUE a value counts as zero; above MAX_VALUE (about
# 115 days) it lands in the top bin. So every key lies in MIN_KEY..MAX_KEY (about
# 2,200 keys), and a wire sketch outside them is garbage.
MIN_VALUE = 1e-9
MAX_VALUE = 1e10
MIN_KEY = math.ceil(math.log(MIN_VALUE) * _MULTIPLIER)
MAX_KEY = math.ceil(math.log(MAX_VALUE) * _MULTIPLIER)
MAX_WIRE_BINS = 4096


class SketchWireError(ValueError):
    """A sketch on the wire that we refuse to trust."""


def key_of(value: float) -> int:
    """The bin of a positive value above MIN_VALUE."""
    k = math.ceil(math.log(value) * _MULTIPLIER)
    return k if k <= MAX_KEY else MAX_KEY


def value_of(key: int) -> float:
    """What a bin stands for: within RELATIVE_ACCURACY of every value in it."""
    return float(_GAMMA**key * _VALUE_FACTOR)


class Sketch:
    """Latency sketch. ``__slots__`` and a plain dict: the request path adds to it."""

    __slots__ = ("bins", "zero", "count")

    def __init__(self) -> None:
        self.bins: dict[int, int] = {}
        self.zero = 0
        self.count = 0

    def add(self, value: float) -> None:
        self.count += 1
        if value > MIN_VALUE:
            k = math.ceil(math.log(value) * _MULTIPLIER)
            if k > MAX_KEY:
                k = MAX_KEY
            bins = self.bins
            bins[k] = bins.get(k, 0) + 1
        else:
            self.zero += 1

    def merge(self, other: Sketch) -> None:
        if not other.count:
            return
        bins = self.bins
        for k, c in other.bins.items():
            bins[k] = bins.get(k, 0) + c
        self.zero += other.zero
        self.count += other.count

    def quantile(self, q: float) -> float | None:
        """The value at quantile ``q`` (0..1), None when empty (ddsketch's definition)."""
        if not 0.0 <= q <= 1.0 or self.count == 0:
            return None
        rank = q * (self.count - 1)
        if rank < self.zero:
            return 0.0
        rank -= self.zero
        running = 0
        key = MAX_KEY
        for k in sorted(self.bins):
            running += self.bins[k]
            if running > rank:
                key = k
                break
        return value_of(key)

    # the ddsketch package's name, for code written against it
    get_quantile_value = quantile


def new_sketch() -> Sketch:
    return Sketch()


def sketch_to_wire(sketch: Sketch) -> list[int]:
    """``[zero count, first key, its count, key step, its count, ...]``: occupied bins only,
    keys as steps from the previous one (small numbers), all integers."""
    wire = [sketch.zero]
    prev = None
    bins = sketch.bins
    for k in sorted(bins):
        wire.append(k if prev is None else k - prev)
        wire.append(bins[k])
        prev = k
    return wire


def sketch_from_wire(wire: object) -> Sketch:
    """Rebuild a sketch; raise SketchWireError on anything that is not our shape."""
    if not isinstance(wire, list) or not wire or len(wire) % 2 != 1:
        raise SketchWireError("sketch is not a list of a zero count and (key, count) pairs")
    if len(wire) > 1 + 2 * MAX_WIRE_BINS:
        raise SketchWireError("sketch has too many bins")
    for x in wire:
        if type(x) is not int:  # bool is an int subclass: refused too
            raise SketchWireError("sketch holds something other than integers")
    if wire[0] < 0:
        raise SketchWireError("sketch zero count is negative")
    sketch = Sketch()
    sketch.zero = total = wire[0]
    bins = sketch.bins
    key = 0
    for i in range(1, len(wire), 2):
        step, c = wire[i], wire[i + 1]
        if i == 1:
            key = step  # the first key itself; may be negative (latencies under 1 ms)
        elif step < 1:
            raise SketchWireError("sketch keys are not increasing")
        else:
            key += step
        if key < MIN_KEY or key > MAX_KEY:
            raise SketchWireError("sketch is out of bounds")
        if c < 1:
            raise SketchWireError("sketch bin is not a positive count")
        bins[key] = c
        total += c
    sketch.count = total
    return sketch


def quantile(sketch: Sketch, q: float) -> float | None:
    return sketch.quantile(q)
