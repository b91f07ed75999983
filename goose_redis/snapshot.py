"""The live snapshot a dashboard shows: a small, bounded summary of a run, without I/O.

A gaggle's Manager writes it to Redis every metrics interval (the ``snapshot`` key), and a
standalone run builds it on request; the dashboard only ever reads this, never the raw
metrics stream. Its size is bounded whatever the run: at most ``MAX_ROWS`` request rows
(the busiest), ``MAX_POINTS`` chart points, ``MAX_EVENTS`` events and ``MAX_WORKERS``
Workers, with the counts of what was left out, so a dashboard can say so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .metrics import Metrics, RowStats
from .series import Series
from .series import window as series_window
from .shape import Shape
from .sketch import quantile

SNAPSHOT_VERSION = 2
MAX_ROWS = 100
MAX_POINTS = 180
MAX_EVENTS = 50
MAX_WORKERS = 200
MAX_TEXT = 300
WINDOW_S = 5  # req/s "now": over the last complete seconds


@dataclass
class RunView:
    """What the snapshot says about the run besides its metrics (times in local epoch seconds)."""

    kind: str  # "gaggle" or "standalone"
    name: str  # the gaggle name, or "standalone"
    run_id: str
    state: str  # waiting, running, stopping, done
    now: float
    started_at: float | None
    shape: Shape
    users: int  # users running now
    autostart: bool = True
    start_armed: bool = False  # --no-autostart: a start command came
    expect_workers: int = 0
    ready_workers: int = 0
    stop_reason: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    final_duration_s: float | None = None  # the run is over: rows' req/s over the measured period
    report: bool = False  # the final JSON report can be fetched
    clock_s: float = 0.0  # added to the times shown: a gaggle shows its Redis clock, which every host shares
    lag_s: float = 0.0  # how late the newest seconds are complete (a gaggle's deltas come every 2 s)


def _text(value: object) -> str:
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "\u2026"


def _ms(row: RowStats, q: float) -> float | None:
    if not row.count:
        return None
    v = quantile(row.sketch, q)
    return None if v is None else round(min(max(v, row.min_ms), row.max_ms), 3)


def row_view(method: str, name: str, row: RowStats, rps: float) -> dict[str, Any]:
    return {
        "method": _text(method),
        "name": _text(name),
        "count": row.count,
        "fail_count": row.fail_count,
        "rps": round(rps, 3),
        "p50_ms": _ms(row, 0.50),
        "p95_ms": _ms(row, 0.95),
        "p99_ms": _ms(row, 0.99),
    }


def recent_rows(series: Series, now: float, window_s: int = WINDOW_S) -> dict[str, float]:
    """Requests per second of each series row (``"METHOD name"``) over the last complete seconds."""
    end = int(now // series.interval_s) * series.interval_s  # the current bucket is incomplete
    counts: dict[str, int] = {}
    span = 0
    key = end - series.interval_s
    first = min(series.buckets, default=end)
    while span < window_s and key >= first:
        bucket = series.buckets.get(key)
        if bucket is not None:
            for name, (n, _f) in bucket.rows.items():
                counts[name] = counts.get(name, 0) + n
        span += series.interval_s
        key -= series.interval_s
    return {name: n / span for name, n in counts.items()} if span else {}


def points(series: Series, origin: float, now: float, limit: int = MAX_POINTS) -> list[dict[str, Any]]:
    """The last ``limit`` complete buckets: users, req/s, fail/s, p95 (seconds after ``origin``)."""
    end = int(now // series.interval_s) * series.interval_s
    keys = sorted(k for k in series.buckets if k < end)
    if not keys:
        return []
    first = max(keys[0], end - limit * series.interval_s)
    users_now: dict[str, int] = {}
    for key in keys:  # users carry forward per source from before the window
        if key >= first:
            break
        users_now.update(series.buckets[key].users)
    out = []
    for key in range(first, end, series.interval_s):
        bucket = series.buckets.get(key)
        if bucket is not None:
            users_now.update(bucket.users)
        n, f = (bucket.requests, bucket.failures) if bucket is not None else (0, 0)
        p95 = quantile(bucket.sketch, 0.95) if bucket is not None else None
        out.append({
            "t": round(key - origin, 3),
            "users": sum(users_now.values()),
            "rps": round(n / series.interval_s, 3),
            "fail_ps": round(f / series.interval_s, 3),
            "p95_ms": None if p95 is None else round(p95, 3),
        })  # fmt: skip
    return out


def _busiest(rows: Iterable[tuple[tuple[str, str], RowStats]], limit: int) -> list[tuple[tuple[str, str], RowStats]]:
    chosen = sorted(rows, key=lambda kv: (-kv[1].count, kv[0][1], kv[0][0]))[:limit]
    return sorted(chosen, key=lambda kv: (kv[0][1], kv[0][0]))  # as the report orders them: by name


def build_snapshot(view: RunView, measured: Metrics, series: Series) -> dict[str, Any]:
    """The snapshot document (docs/redis-keys.md, ``snapshot``). ``measured`` holds the rows as
    the report counts them (after the metrics reset), ``series`` the whole run for the charts."""
    final = view.final_duration_s
    complete = view.now - view.lag_s  # the seconds before this are all in
    rates = {} if final is not None else recent_rows(series, complete)
    rows = []
    for (method, name), row in _busiest(measured.requests.items(), MAX_ROWS):
        rps = row.count / final if final else rates.get(f"{method} {name}", 0.0)
        rows.append(row_view(method, name, row, rps))
    total = measured.aggregated()
    if final is not None:
        total_rps = total.count / final if final else 0.0
        fail_ps = total.fail_count / final if final else 0.0
        recent_p95 = _ms(total, 0.95)
    else:
        total_rps, fail_ps, recent_p95 = window(series, complete)
    shape = view.shape
    elapsed = view.now - view.started_at if view.started_at is not None else 0.0
    origin = view.started_at if view.started_at is not None else view.now
    return {
        "v": SNAPSHOT_VERSION,
        "kind": view.kind,
        "name": _text(view.name),
        "run_id": view.run_id,
        "state": view.state,
        "at": round(view.now + view.clock_s, 3),
        "started_at": None if view.started_at is None else round(view.started_at + view.clock_s, 3),
        "elapsed_s": round(max(0.0, elapsed), 3),
        "autostart": view.autostart,
        "start_armed": view.start_armed,
        "expect_workers": view.expect_workers,
        "ready_workers": view.ready_workers,
        "stop_reason": _text(view.stop_reason),
        "users": view.users,
        "shape": {
            "users": shape.users_at(max(0.0, elapsed)),
            "peak": shape.peak,
            "hatch_rate": round(shape.hatch_rate, 6),
            "end_s": shape.end_s,
            "remaining_s": None if shape.end_s is None else round(max(0.0, shape.end_s - max(0.0, elapsed)), 3),
            "throttle": shape.throttle,
        },
        "totals": {
            "requests": total.count,
            "failures": total.fail_count,
            "rps": round(total_rps, 3),
            "fail_ps": round(fail_ps, 3),
            "p95_ms": None if recent_p95 is None else round(recent_p95, 3),
        },
        "aggregated": row_view("", "Aggregated", total, total_rps),
        "requests": rows,
        "rows_omitted": max(0, len(measured.requests) - MAX_ROWS),
        "workers": [_worker(w) for w in view.workers[:MAX_WORKERS]],
        "workers_omitted": max(0, len(view.workers) - MAX_WORKERS),
        "points": points(series, origin, complete if final is None else view.now + series.interval_s),
        "interval_s": series.interval_s,
        "events": [_event(e) for e in view.events[-MAX_EVENTS:]],
        "events_omitted": max(0, len(view.events) - MAX_EVENTS),
        "report": view.report,
    }


def window(series: Series, now: float, window_s: int = WINDOW_S) -> tuple[float, float, float | None]:
    """(req/s, fail/s, p95) over the last complete seconds (fewer when the run is younger)."""
    return series_window(series, now, window_s)


def _worker(w: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "index": int(w.get("index", 0)),
        "id": _text(w.get("id", "")),
        "host": _text(w.get("host", "")),
        "state": _text(w.get("state", "")),
        "alive": bool(w.get("alive", False)),
        "users": int(w.get("users", 0)),
        "requests": int(w.get("requests", 0)),
        "failures": int(w.get("failures", 0)),
        "rps": round(float(w.get("rps", 0.0)), 3),
    }


def _event(e: Mapping[str, Any]) -> dict[str, Any]:
    value = e.get("value")
    return {
        "t": float(e.get("t", 0.0)),
        "at": _text(e.get("at", "")),
        "command": _text(e.get("command", "")),
        "value": None if value is None else _text(value),
        "by": _text(e.get("by", "")),
    }
