"""Aggregates per request, per transaction and per scenario; exact merge; wire form.

A ``RowStats`` holds what every table row needs: exact count, failures,
min/max/sum, status-code and error counts, response body bytes (request rows),
and a DDSketch for percentiles.
Two rows merge exactly (counters add, sketches merge), so a Worker can ship
deltas and the Manager can add them up in any order. A Worker may keep its rows'
sketches back for a few deltas (``Metrics.take(sketches=False)``): the counts go
every delta, the bulky sketches every few, and the final delta carries the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .series import Series
from .sketch import Sketch, SketchWireError, sketch_from_wire, sketch_to_wire

# Error texts are free-form (exception messages); cap them so a noisy target
# cannot grow a row without bound.
MAX_ERROR_TEXT = 200
MAX_ERRORS_PER_ROW = 100
OTHER_ERRORS = "(other errors)"


class WireError(ValueError):
    """A metrics payload that is not ours; the caller logs and drops it."""


class RowStats:
    """One table row. ``__slots__`` because the request path touches it per request."""

    __slots__ = ("count", "fail_count", "total_ms", "min_ms", "max_ms", "sketch", "status_codes", "errors", "bytes")

    def __init__(self) -> None:
        self.count = 0
        self.fail_count = 0
        self.total_ms = 0.0
        self.min_ms = float("inf")
        self.max_ms = 0.0
        self.sketch = Sketch()
        self.status_codes: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.bytes = 0  # response body bytes received (request rows only)

    def record(
        self, ms: float, success: bool, status: int | None = None, error: str | None = None, size: int = 0
    ) -> None:
        ms = ms if ms > 0.0 else 0.0
        self.count += 1
        self.bytes += size
        self.total_ms += ms
        if ms < self.min_ms:
            self.min_ms = ms
        if ms > self.max_ms:
            self.max_ms = ms
        self.sketch.add(ms)
        if status is not None:
            self.status_codes[status] = self.status_codes.get(status, 0) + 1
        if not success:
            self.fail_count += 1
            if error:
                self.add_error(error)

    def add_error(self, error: str, n: int = 1) -> None:
        text = error[:MAX_ERROR_TEXT]
        if text not in self.errors and len(self.errors) >= MAX_ERRORS_PER_ROW:
            text = OTHER_ERRORS
        self.errors[text] = self.errors.get(text, 0) + n

    def merge(self, other: RowStats) -> None:
        if other.count == 0 and not other.errors and not other.sketch.count:
            return
        self.count += other.count
        self.fail_count += other.fail_count
        self.total_ms += other.total_ms
        self.bytes += other.bytes
        self.min_ms = min(self.min_ms, other.min_ms)
        self.max_ms = max(self.max_ms, other.max_ms)
        self.sketch.merge(other.sketch)
        for code, n in other.status_codes.items():
            self.status_codes[code] = self.status_codes.get(code, 0) + n
        for text, n in other.errors.items():
            self.add_error(text, n)

    def to_wire(self) -> dict[str, Any]:
        return {
            "n": self.count,
            "f": self.fail_count,
            "sum": self.total_ms,
            "min": self.min_ms if self.count else None,
            "max": self.max_ms,
            "sk": sketch_to_wire(self.sketch),
            "sc": {str(k): v for k, v in self.status_codes.items()},
            "err": self.errors,
            "by": self.bytes,
        }

    @classmethod
    def from_wire(cls, wire: object) -> RowStats:
        if not isinstance(wire, dict):
            raise WireError("row is not an object")
        row = cls()
        try:
            n, f, total = wire["n"], wire["f"], wire["sum"]
            lo, hi, codes, errors = wire["min"], wire["max"], wire["sc"], wire["err"]
            if not (isinstance(n, int) and isinstance(f, int) and 0 <= f <= n):
                raise WireError("row counts are not sane")
            if not isinstance(codes, dict) or not isinstance(errors, dict):
                raise WireError("row maps are not objects")
            row.count, row.fail_count, row.total_ms = n, f, float(total)
            row.min_ms = float("inf") if lo is None else float(lo)
            row.max_ms = float(hi)
            row.sketch = sketch_from_wire(wire["sk"])
            row.status_codes = {int(k): _count(v) for k, v in codes.items()}
            row.errors = {str(k)[:MAX_ERROR_TEXT]: _count(v) for k, v in errors.items()}
            row.bytes = _count(wire["by"])
        except (KeyError, TypeError, ValueError, SketchWireError) as exc:
            raise WireError(f"bad row: {exc}") from exc
        # The sketch may hold fewer samples than the count (kept back for a later delta)
        # or more (samples kept back from earlier ones): only the final merge must agree.
        return row


def _count(v: object) -> int:
    if not isinstance(v, int) or v < 0:
        raise WireError("a count is not a non-negative integer")
    return v


RequestKey = tuple[str, str]  # (method, name)
TransactionKey = tuple[int, int]  # (scenario index, transaction index)


@dataclass
class Metrics:
    """All rows of one run (or of one delta). Keys are stable across processes
    because every process loads the same load test (checked by its hash)."""

    requests: dict[RequestKey, RowStats] = field(default_factory=dict)
    transactions: dict[TransactionKey, RowStats] = field(default_factory=dict)
    scenarios: dict[int, RowStats] = field(default_factory=dict)
    series: Series = field(default_factory=Series)
    # Coordinated-omission mitigation: only the synthetic samples; corrected = raw + these.
    co_requests: dict[RequestKey, RowStats] = field(default_factory=dict)
    # Open model: iterations that were due when no user was free.
    dropped_iterations: int = 0
    # Sketches kept back by take(sketches=False), in rows of count 0; never on the wire itself.
    held: Metrics | None = field(default=None, repr=False, compare=False)

    def request_row(self, method: str, name: str) -> RowStats:
        key = (method, name)
        row = self.requests.get(key)
        if row is None:
            row = self.requests[key] = RowStats()
        return row

    def transaction_row(self, scenario_index: int, transaction_index: int) -> RowStats:
        key = (scenario_index, transaction_index)
        row = self.transactions.get(key)
        if row is None:
            row = self.transactions[key] = RowStats()
        return row

    def scenario_row(self, scenario_index: int) -> RowStats:
        row = self.scenarios.get(scenario_index)
        if row is None:
            row = self.scenarios[scenario_index] = RowStats()
        return row

    def co_request_row(self, method: str, name: str) -> RowStats:
        key = (method, name)
        row = self.co_requests.get(key)
        if row is None:
            row = self.co_requests[key] = RowStats()
        return row

    def is_empty(self) -> bool:
        return not (
            self.requests or self.transactions or self.scenarios or self.series.buckets or self.co_requests
            or self.dropped_iterations
        )  # fmt: skip

    def total_requests(self) -> tuple[int, int]:
        return (
            sum(r.count for r in self.requests.values()),
            sum(r.fail_count for r in self.requests.values()),
        )

    def aggregated(self) -> RowStats:
        total = RowStats()
        for row in self.requests.values():
            total.merge(row)
        return total

    def merge(self, other: Metrics, *, with_series: bool = True) -> None:
        for rk, row in other.requests.items():
            self.request_row(*rk).merge(row)
        for tk, row in other.transactions.items():
            self.transaction_row(*tk).merge(row)
        for sk, row in other.scenarios.items():
            self.scenario_row(sk).merge(row)
        for rk, row in other.co_requests.items():
            self.co_request_row(*rk).merge(row)
        self.dropped_iterations += other.dropped_iterations
        if with_series:
            self.series.merge(other.series)

    def sketch_bins(self) -> int:
        """Occupied bins in the rows' sketches, held ones included: what sending them costs."""
        rows = [*self.requests.values(), *self.transactions.values(), *self.scenarios.values()]
        if self.held is not None:
            held = self.held
            rows += [*held.requests.values(), *held.transactions.values(), *held.scenarios.values()]
        return sum(len(r.sketch.bins) for r in rows)

    def take(self, *, sketches: bool = True) -> Metrics:
        """Hand over everything recorded so far and start empty: one delta.

        ``sketches=False`` keeps the rows' sketches back: they stay here, merged, and
        leave with the next delta taken with ``sketches=True`` (so the counts travel
        every interval and the sketches, the bulk of a delta at high rates, less often).
        """
        delta = Metrics(self.requests, self.transactions, self.scenarios, self.series.take(), self.co_requests,
                        self.dropped_iterations)  # fmt: skip
        self.requests, self.transactions, self.scenarios, self.co_requests = {}, {}, {}, {}
        self.dropped_iterations = 0
        if sketches:
            if self.held is not None:
                delta.merge(self.held, with_series=False)  # count-0 rows that carry the kept sketches
                self.held = None
            return delta
        held = self.held = self.held or Metrics()
        _hold(delta.requests, held.requests)
        _hold(delta.transactions, held.transactions)
        _hold(delta.scenarios, held.scenarios)
        return delta

    def take_totals(self) -> Metrics:
        """Goose's reset once all users are launched: hand over the rows, keep the series
        (the charts show the ramp-up too), its buckets marking what left the rows."""
        self.series.discard_all()
        rows = Metrics(self.requests, self.transactions, self.scenarios, co_requests=self.co_requests,
                       dropped_iterations=self.dropped_iterations)  # fmt: skip
        self.requests, self.transactions, self.scenarios, self.co_requests = {}, {}, {}, {}
        self.dropped_iterations = 0
        if self.held is not None:
            rows.merge(self.held, with_series=False)
            self.held = None
        return rows

    def to_wire(self) -> dict[str, Any]:
        return {
            "req": [[m, n, r.to_wire()] for (m, n), r in self.requests.items()],
            "tx": [[s, t, r.to_wire()] for (s, t), r in self.transactions.items()],
            "sc": [[s, r.to_wire()] for s, r in self.scenarios.items()],
            "ser": self.series.to_wire(),
            "co": [[m, n, r.to_wire()] for (m, n), r in self.co_requests.items()],
            "drop": self.dropped_iterations,
        }

    @classmethod
    def from_wire(cls, wire: object) -> Metrics:
        if not isinstance(wire, dict):
            raise WireError("metrics is not an object")
        m = cls()
        try:
            for method, name, row in _triples(wire["req"]):
                if not isinstance(method, str) or not isinstance(name, str):
                    raise WireError("request key is not two strings")
                m.request_row(method, name).merge(RowStats.from_wire(row))
            for s, t, row in _triples(wire["tx"]):
                m.transaction_row(_index(s), _index(t)).merge(RowStats.from_wire(row))
            for pair in wire["sc"]:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise WireError("scenario entry is not a pair")
                m.scenario_row(_index(pair[0])).merge(RowStats.from_wire(pair[1]))
            m.series = Series.from_wire(wire["ser"])
            for method, name, row in _triples(wire.get("co", [])):
                if not isinstance(method, str) or not isinstance(name, str):
                    raise WireError("request key is not two strings")
                m.co_request_row(method, name).merge(RowStats.from_wire(row))
            m.dropped_iterations = _count(wire.get("drop", 0))
        except (KeyError, TypeError) as exc:
            raise WireError(f"bad metrics: {exc}") from exc
        except ValueError as exc:
            raise WireError(str(exc)) from exc
        return m


def _hold(rows: dict[Any, RowStats], kept: dict[Any, RowStats]) -> None:
    """Move the sketches of ``rows`` into ``kept`` (rows of count 0)."""
    for key, row in rows.items():
        if row.sketch.count:
            k = kept.get(key)
            if k is None:
                k = kept[key] = RowStats()
            k.sketch.merge(row.sketch)
            row.sketch = Sketch()


def _triples(items: object) -> Iterable[list[Any]]:
    if not isinstance(items, list):
        raise WireError("rows are not a list")
    for item in items:
        if not isinstance(item, list) or len(item) != 3:
            raise WireError("row entry is not a triple")
        yield item


def _index(v: object) -> int:
    if not isinstance(v, int) or v < 0:
        raise WireError("an index is not a non-negative integer")
    return v
