"""Metrics -> the report dict that every output format is rendered from.

The shape is documented in docs/reports.md (and docs/architecture.md); the
JSON report is this dict as written, so keep changes backward compatible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .. import __version__
from ..metrics import Metrics, RowStats
from ..scenario import LoadTest
from ..shape import Step
from ..sketch import quantile

SCHEMA_VERSION = 1
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("50", 0.50), ("75", 0.75), ("90", 0.90), ("95", 0.95), ("99", 0.99), ("99.9", 0.999),
)  # fmt: skip


@dataclass
class Phase:
    name: str  # "ramp-up", "steady" or "stop"
    started_at: float
    ended_at: float


@dataclass
class RunInfo:
    mode: str  # "standalone" or "gaggle"
    started_at: float
    ended_at: float
    measured_from: float  # the reset moment, or the start
    users: int
    host: str | None
    hatch_rate: float | None
    run_time_s: float | None
    iterations: int | None
    metrics_reset: bool
    phases: list[Phase] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    scenario_users: dict[int, int] = field(default_factory=dict)
    test_plan: str | None = None
    plan: list[Step] = field(default_factory=list)  # times relative to started_at
    throttle_requests: float | None = None
    arrival_rate: str | None = None
    co_mitigation: str = "disabled"
    problems: list[str] = field(default_factory=list)  # why the totals are known incomplete
    events: list[dict[str, Any]] = field(default_factory=list)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def row_dict(name: str, row: RowStats, duration_s: float, *, with_status: bool = False) -> dict[str, Any]:
    count = row.count
    d: dict[str, Any] = {
        "name": name,
        "count": count,
        "fail_count": row.fail_count,
        "fail_pct": round(100.0 * row.fail_count / count, 3) if count else 0.0,
        "rps": count / duration_s if duration_s > 0 else 0.0,
        "fail_ps": row.fail_count / duration_s if duration_s > 0 else 0.0,
        "mean_ms": row.total_ms / count if count else None,
        "min_ms": row.min_ms if count else None,
        "max_ms": row.max_ms if count else None,
        "median_ms": None,
        "percentiles_ms": {},
        "status_codes": {str(k): v for k, v in sorted(row.status_codes.items())} if with_status else {},
        "errors": dict(sorted(row.errors.items(), key=lambda kv: -kv[1])),
    }
    if count:
        # A sketch value may sit up to 1 % outside the exact range; the exact range wins.
        pct = {}
        for label, q in PERCENTILES:
            v = quantile(row.sketch, q)
            pct[label] = min(max(v, row.min_ms), row.max_ms) if v is not None else None
        d["percentiles_ms"] = pct
        d["median_ms"] = pct["50"]
    if with_status:  # request rows and the aggregated row: response body bytes received
        d["bytes"] = row.bytes
        d["mean_bytes"] = row.bytes / count if count else None
    return d


def co_dict(raw: RowStats, synthetic: RowStats | None) -> dict[str, Any]:
    """Raw plus the coordinated-omission backfill, in the shape of a row's figures."""
    corrected = RowStats()
    corrected.merge(raw)
    if synthetic is not None:
        corrected.merge(synthetic)
    d = row_dict("", corrected, 1.0)
    return {
        "count": corrected.count,
        "synthetic": synthetic.count if synthetic is not None else 0,
        "mean_ms": d["mean_ms"],
        "max_ms": d["max_ms"],
        "median_ms": d["median_ms"],
        "percentiles_ms": d["percentiles_ms"],
    }


def _transaction_name(load_test: LoadTest, si: int, ti: int) -> tuple[str, str]:
    try:
        s = load_test.scenarios[si]
        return s.name, s.transactions[ti].display_name
    except IndexError:  # a Worker with another load test (--no-hash-check)
        return f"scenario {si + 1}", f"transaction {ti + 1}"


def _scenario_name(load_test: LoadTest, si: int) -> str:
    return load_test.scenarios[si].name if si < len(load_test.scenarios) else f"scenario {si + 1}"


def build_report(metrics: Metrics, load_test: LoadTest, info: RunInfo) -> dict[str, Any]:
    duration = max(info.ended_at - info.measured_from, 1e-9)
    requests = []
    co_on = info.co_mitigation != "disabled"
    for (method, name), row in sorted(metrics.requests.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        d = row_dict(name, row, duration, with_status=True)
        d["method"] = method
        d["co"] = co_dict(row, metrics.co_requests.get((method, name))) if co_on else None
        requests.append(d)
    total = metrics.aggregated()
    aggregated = row_dict("Aggregated", total, duration, with_status=True)
    aggregated["method"] = ""
    if co_on:
        synthetic = RowStats()
        for row in metrics.co_requests.values():
            synthetic.merge(row)
        aggregated["co"] = co_dict(total, synthetic)
    else:
        aggregated["co"] = None
    all_transactions = RowStats()
    transactions = []
    for (si, ti), row in sorted(metrics.transactions.items()):
        all_transactions.merge(row)
        scenario, tx = _transaction_name(load_test, si, ti)
        d = row_dict(tx, row, duration)
        d.update(scenario=scenario, scenario_index=si, transaction_index=ti)
        transactions.append(d)
    scenarios = []
    for si in sorted(set(metrics.scenarios) | set(info.scenario_users)):
        row = metrics.scenarios.get(si) or RowStats()
        d = row_dict(_scenario_name(load_test, si), row, duration)
        d["users"] = info.scenario_users.get(si, 0)
        scenarios.append(d)
    errors: list[dict[str, Any]] = [
        {"method": method, "name": name, "error": text, "count": n}
        for (method, name), row in metrics.requests.items()
        for text, n in row.errors.items()
    ]
    errors.sort(key=lambda e: (-int(e["count"]), str(e["name"]), str(e["error"])))
    series = metrics.series
    # The start of the run's first bucket, so point times are whole multiples of the
    # interval; earlier if a bucket lies before it (a Worker's clock a little ahead of
    # the Manager's), so that no point has a negative time.
    series_origin = float(min([int(info.started_at // series.interval_s) * series.interval_s, *series.buckets]))
    return {
        "schema": SCHEMA_VERSION,
        "version": __version__,
        "mode": info.mode,
        "started_at": iso(info.started_at),
        "ended_at": iso(info.ended_at),
        "duration_s": round(duration, 3),
        "users": info.users,
        "host": info.host or "",
        "hatch_rate": info.hatch_rate,
        "run_time_s": info.run_time_s,
        "iterations": info.iterations,
        "metrics_reset": info.metrics_reset,
        "phases": [
            {"name": p.name, "started_at": iso(p.started_at), "duration_s": round(p.ended_at - p.started_at, 3)}
            for p in info.phases
        ],
        "test_plan": info.test_plan,
        "plan": [
            {
                "step": n,
                "action": step.action,
                "from": step.start,
                "to": step.end,
                "t": round(step.at, 3),
                "started_at": iso(info.started_at + step.at),
                "ended_at": iso(info.started_at + step.until),
                "duration_s": round(step.until - step.at, 3),
            }
            for n, step in enumerate(info.plan, start=1)
        ],
        "throttle_requests": info.throttle_requests,
        "arrival_rate": info.arrival_rate,
        "dropped_iterations": metrics.dropped_iterations,
        "co_mitigation": info.co_mitigation,
        "integrity": {"complete": not info.problems, "problems": list(info.problems)},
        "events": list(info.events),
        "workers": info.workers,
        "scenarios": scenarios,
        "transactions": transactions,
        "requests": requests,
        "aggregated": aggregated,
        "aggregated_transactions": row_dict("Aggregated", all_transactions, duration),
        "errors": errors,
        "series": {
            "interval_s": series.interval_s,
            "started_at": series_origin,
            "points": series.points(series_origin, measured_all=not info.metrics_reset),
        },
    }


def phases_of(started: float, ramp_done: float | None, stopping: float | None, ended: float) -> list[Phase]:
    """Goose's phases from the moments a run passed through.

    A run that has not begun to stop (a running report) has no "stop" phase: its last
    phase lasts until ``ended``, the moment of the report.
    """
    end_of_load = stopping if stopping is not None else ended
    ramp_end = min(ramp_done, end_of_load) if ramp_done is not None else end_of_load
    phases = [Phase("ramp-up", started, ramp_end)]
    if ramp_done is not None and ramp_done < end_of_load:
        phases.append(Phase("steady", ramp_done, end_of_load))
    if stopping is not None:
        phases.append(Phase("stop", stopping, ended))
    return phases
