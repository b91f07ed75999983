"""Per-interval time series with bounded memory.

Buckets are keyed by absolute epoch time (``floor(t / interval) * interval``),
so deltas from different Workers merge by *when* requests happened, not by
when the deltas arrived. Past ``MAX_BUCKETS`` buckets the interval doubles and
neighbouring buckets merge, so a long run keeps a fixed memory footprint.

Active users are kept per *source* (a Worker id, or "" for this process) as
the most users active at once during the bucket: a bucket split across two
deltas of one Worker must not count its users twice (the maximum of the two
parts is the maximum of the whole), while users of different Workers add up.

The metrics reset (Goose's ``--no-reset-metrics`` off, the default) discards
the ramp-up from the table rows but not from the series: the charts show the
whole run. So that the series still adds up to the rows, each bucket counts
how many of its requests and failures the reset ``discarded``
(:meth:`Series.discard_all` at the reset moment, or on the Manager for a
Worker's ramp-up delta). A request started before the reset and recorded after
it (a slow request, or one in a transaction still running at the reset) stays
in its start bucket but is *measured*, as it is in the rows.
"""

from __future__ import annotations

from typing import Any

from .sketch import Sketch, new_sketch, quantile, sketch_from_wire, sketch_to_wire

MAX_BUCKETS = 3600


class Bucket:
    __slots__ = ("requests", "failures", "sketch", "rows", "users", "discarded")

    def __init__(self) -> None:
        self.requests = 0
        self.failures = 0
        self.sketch: Sketch = new_sketch()
        self.rows: dict[str, list[int]] = {}
        self.users: dict[str, int] = {}
        # [requests, failures] of this bucket that the metrics reset left out of the rows.
        # Not on the wire: Workers never discard; the Manager marks their ramp-up deltas.
        self.discarded = [0, 0]

    def merge(self, other: Bucket, source: str | None = None) -> None:
        self.requests += other.requests
        self.failures += other.failures
        self.sketch.merge(other.sketch)
        self.discarded[0] += other.discarded[0]
        self.discarded[1] += other.discarded[1]
        for key, (n, f) in other.rows.items():
            row = self.rows.get(key)
            if row is None:
                self.rows[key] = [n, f]
            else:
                row[0] += n
                row[1] += f
        for src, users in other.users.items():
            src = src if source is None else source
            self.users[src] = max(self.users.get(src, 0), users)


class Series:
    def __init__(self, interval_s: int = 1) -> None:
        self.interval_s = interval_s
        self.buckets: dict[int, Bucket] = {}

    def _bucket(self, t: float) -> Bucket:
        key = int(t // self.interval_s) * self.interval_s
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = Bucket()
            if len(self.buckets) > MAX_BUCKETS:
                self._coarsen()
                b = self._bucket(t)
        return b

    def record(self, t: float, row_key: str, ms: float, success: bool) -> None:
        b = self._bucket(t)
        b.requests += 1
        b.sketch.add(ms if ms > 0.0 else 0.0)
        row = b.rows.get(row_key)
        if row is None:
            row = b.rows[row_key] = [0, 0]
        row[0] += 1
        if not success:
            b.failures += 1
            row[1] += 1

    def mark_failed(self, t: float, row_key: str, failed: bool) -> None:
        """A request's outcome changed after it was recorded (validation)."""
        b = self._bucket(t)
        delta = 1 if failed else -1
        b.failures += delta
        row = b.rows.setdefault(row_key, [0, 0])
        row[1] += delta

    def set_users(self, t: float, users: int, source: str = "") -> None:
        b = self._bucket(t)
        b.users[source] = max(b.users.get(source, 0), users)

    def discard_all(self) -> None:
        """The metrics reset: everything recorded so far leaves the totals (not the charts)."""
        for b in self.buckets.values():
            b.discarded = [b.requests, b.failures]

    def _coarsen(self) -> None:
        self.interval_s *= 2
        old, self.buckets = self.buckets, {}
        for key, bucket in old.items():
            new_key = (key // self.interval_s) * self.interval_s
            target = self.buckets.get(new_key)
            if target is None:
                self.buckets[new_key] = bucket
            else:
                target.merge(bucket)

    def merge(self, other: Series, source: str | None = None) -> None:
        for key, bucket in other.buckets.items():
            self._bucket(float(key)).merge(bucket, source)

    def take(self) -> Series:
        out = Series(self.interval_s)
        out.buckets, self.buckets = self.buckets, {}
        return out

    def to_wire(self) -> dict[str, Any]:
        return {
            "i": self.interval_s,
            "b": [
                [key, b.requests, b.failures, sketch_to_wire(b.sketch), b.rows, b.users]
                for key, b in sorted(self.buckets.items())
            ],
        }

    @classmethod
    def from_wire(cls, wire: object) -> Series:
        if not isinstance(wire, dict) or not isinstance(wire.get("i"), int) or wire["i"] < 1:
            raise ValueError("series is not an object with a positive interval")
        s = cls(wire["i"])
        items = wire.get("b")
        if not isinstance(items, list) or len(items) > MAX_BUCKETS:
            raise ValueError("series buckets are not a bounded list")
        for item in items:
            if not isinstance(item, list) or len(item) != 6:
                raise ValueError("series bucket is not a 6-item list")
            key, n, f, sk, rows, users = item
            if not (isinstance(key, int) and isinstance(n, int) and isinstance(f, int)):
                raise ValueError("series bucket counts are not integers")
            if not isinstance(rows, dict) or not isinstance(users, dict):
                raise ValueError("series bucket maps are not objects")
            b = Bucket()
            b.requests, b.failures, b.sketch = n, f, sketch_from_wire(sk)
            for rk, pair in rows.items():
                if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, int) for x in pair)):
                    raise ValueError("series row is not a pair of integers")
                b.rows[str(rk)] = [pair[0], pair[1]]
            for src, u in users.items():
                if not isinstance(u, int):
                    raise ValueError("series users is not an integer")
                b.users[str(src)] = u
            s.buckets[key] = b
        return s

    def points(self, origin: float, measured_all: bool = False) -> list[dict[str, Any]]:
        """Report form: one point per bucket from ``origin``; gaps are filled so
        charts have an even time axis, and users carry forward per source.

        ``measured_requests``/``measured_failures`` are the bucket's requests that are in
        the report's rows: all of them when ``measured_all`` (the reset did not happen, or
        its ramp-up was added back to the rows), else those the reset did not discard."""
        if not self.buckets:
            return []
        first = int(origin // self.interval_s) * self.interval_s
        first = min(first, min(self.buckets))
        last = max(self.buckets)
        users_now: dict[str, int] = {}
        points: list[dict[str, Any]] = []
        for key in range(first, last + 1, self.interval_s):
            b = self.buckets.get(key)
            if b is None:
                b = Bucket()
            users_now.update(b.users)
            points.append(
                {
                    "t": round(key - origin, 3),
                    "users": sum(users_now.values()),
                    "requests": b.requests,
                    "failures": b.failures,
                    "rps": b.requests / self.interval_s,
                    "fail_ps": b.failures / self.interval_s,
                    "p50_ms": quantile(b.sketch, 0.50),
                    "p95_ms": quantile(b.sketch, 0.95),
                    "p99_ms": quantile(b.sketch, 0.99),
                    "rows": {k: list(v) for k, v in sorted(b.rows.items())},
                    "measured_requests": b.requests if measured_all else b.requests - b.discarded[0],
                    "measured_failures": b.failures if measured_all else b.failures - b.discarded[1],
                }
            )
        return points


def window(series: Series, now: float, window_s: int = 5) -> tuple[float, float, float | None]:
    """(requests/s, failures/s, p95) over the last complete ``window_s`` seconds, or over the
    complete buckets there are when the series is younger than that (a run's first seconds
    are not averaged with the time before it started)."""
    sketch = new_sketch()
    span = requests = failures = 0
    end = int(now // series.interval_s) * series.interval_s  # the current bucket is incomplete
    key = end - series.interval_s
    first = min(series.buckets, default=end)
    while span < window_s and key >= first:
        b = series.buckets.get(key)
        if b is not None:
            requests += b.requests
            failures += b.failures
            sketch.merge(b.sketch)
        span += series.interval_s
        key -= series.interval_s
    if not span:
        return 0.0, 0.0, quantile(sketch, 0.95)
    return requests / span, failures / span, quantile(sketch, 0.95)


def recent(series: Series, now: float, window_s: int = 5) -> tuple[float, float | None]:
    """Requests per second and p95 over the last complete ``window_s`` seconds (see ``window``)."""
    rps, _, p95 = window(series, now, window_s)
    return rps, p95
