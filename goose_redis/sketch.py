"""DDSketch with one fixed accuracy, and a wire form that survives orjson.

The ddsketch package's protobuf round trip drops sum/min/max and needs an
extra dependency; we only ship the positive bins (latencies are never
negative) and keep exact count/sum/min/max beside the sketch in ``RowStats``.
The wire size grows with the number of occupied bins (the spread of latencies),
never with the number of samples.
"""

from __future__ import annotations

from typing import Any

from ddsketch import DDSketch

RELATIVE_ACCURACY = 0.01
# A 1 % sketch covers 1 µs .. 1 day in about 1,600 bins; more is garbage.
MAX_WIRE_BINS = 4096


class SketchWireError(ValueError):
    """A sketch on the wire that we refuse to trust."""


def new_sketch() -> DDSketch:
    return DDSketch(relative_accuracy=RELATIVE_ACCURACY)


# Every key a sketch of ours can hold (about -35,000 .. 35,000). A wire sketch outside
# this range is garbage, and merging it would allocate every bin in between.
_MAPPING = new_sketch()._mapping
MIN_KEY = int(_MAPPING.key(_MAPPING.min_possible))
MAX_KEY = int(_MAPPING.key(_MAPPING.max_possible))


def sketch_to_wire(sketch: DDSketch) -> dict[str, Any]:
    """``{"o": first key, "b": [counts...], "z": zero count}``; counts as ints."""
    store = sketch._store  # DenseStore: bins[i] holds key offset + i
    wire: dict[str, Any] = {"o": 0, "b": [], "z": int(sketch._zero_count)}
    if store.count:
        lo = store.min_key - store.offset
        hi = store.max_key - store.offset
        wire["o"] = int(store.min_key)
        wire["b"] = [int(c) for c in store.bins[lo : hi + 1]]
    return wire


def sketch_from_wire(wire: object) -> DDSketch:
    """Rebuild a sketch; raise SketchWireError on anything that is not our shape."""
    if not isinstance(wire, dict):
        raise SketchWireError("sketch is not an object")
    offset, bins, zero = wire.get("o"), wire.get("b"), wire.get("z", 0)
    if not isinstance(offset, int) or not isinstance(bins, list) or not isinstance(zero, int):
        raise SketchWireError("sketch fields have the wrong types")
    if len(bins) > MAX_WIRE_BINS or zero < 0 or offset < MIN_KEY or offset + len(bins) - 1 > MAX_KEY:
        raise SketchWireError("sketch is out of bounds")
    sketch = new_sketch()
    total = zero
    for i, c in enumerate(bins):
        if not isinstance(c, int) or c < 0:
            raise SketchWireError("sketch bin is not a non-negative integer")
        if c:
            sketch._store.add(offset + i, float(c))
            total += c
    sketch._zero_count = float(zero)
    sketch._count = float(total)
    return sketch


def quantile(sketch: DDSketch, q: float) -> float | None:
    value = sketch.get_quantile_value(q)
    return None if value is None else float(value)
