"""Synthetic report dicts (the shape of docs/architecture.md) for renderer tests.

Built from per-second counts so every total in the dict agrees with its series.
"""

from __future__ import annotations

import math
from typing import Any

STARTED_EPOCH = 1795446000.0  # 2026-11-23T15:00:00+00:00
DURATION_S = 60


def _percentiles(mean: float) -> dict[str, float]:
    shape = {"50": 0.85, "75": 1.2, "90": 1.7, "95": 2.2, "99": 3.5, "99.9": 5.0}
    return {k: round(mean * f, 2) for k, f in shape.items()}


def _row(name: str, count: int, fails: int, mean: float, codes: dict[str, int] | None = None,
         errors: dict[str, int] | None = None) -> dict[str, Any]:
    if count == 0:
        timing: dict[str, Any] = {"mean_ms": None, "min_ms": None, "max_ms": None, "median_ms": None,
                                  "percentiles_ms": {}}
    else:
        pct = _percentiles(mean)
        timing = {"mean_ms": mean, "min_ms": round(mean * 0.3, 2), "max_ms": round(mean * 7.5, 2),
                  "median_ms": pct["50"], "percentiles_ms": pct}
    return {
        "name": name, "count": count, "fail_count": fails,
        "fail_pct": fails * 100.0 / count if count else 0.0,
        "rps": count / DURATION_S, "fail_ps": fails / DURATION_S,
        **timing,
        "status_codes": codes or {},
        "errors": errors or {},
    }


# (method, name, share of traffic, mean ms, failure every n-th request or 0)
REQUESTS = [
    ("GET", "/", 0.42, 8.4, 0),
    ("GET", "/node/:nid", 0.33, 14.7, 0),
    ("GET", "/user/login", 0.08, 6.1, 0),
    ("POST", "/user/login", 0.07, 48.2, 0),
    ("GET", "/static/logo.png", 0.10, 2.3, 9),
]


def _users_at(t: int) -> int:
    if t < 4:
        return 2 * (t + 1)
    if t >= DURATION_S - 4:
        return max(0, 2 * (DURATION_S - 1 - t))
    return 8


def sample_report() -> dict[str, Any]:
    """A gaggle run: 2 scenarios, 4 transactions, 5 requests, errors, 2 workers, 60 points."""
    points: list[dict[str, Any]] = []
    totals = {f"{m} {n}": [0, 0] for m, n, *_ in REQUESTS}
    refused = 0
    for t in range(DURATION_S):
        users = _users_at(t)
        total = int(users * 11 + 6 * math.sin(t / 4.0)) if users else 0
        rows: dict[str, list[int]] = {}
        for method, name, share, _mean, every in REQUESTS:
            count = int(total * share)
            fails = count // every if every else 0
            if name == "/node/:nid" and t in (20, 21):  # a short outage
                fails, refused = fails + 3, refused + 3
            rows[f"{method} {name}"] = [count, fails]
            totals[f"{method} {name}"][0] += count
            totals[f"{method} {name}"][1] += fails
        req = sum(c for c, _ in rows.values())
        fail = sum(f for _, f in rows.values())
        wobble = 1 + 0.25 * math.sin(t / 3.0) + (0.8 if t in (20, 21) else 0.0)
        points.append({
            "t": float(t), "users": users, "requests": req, "failures": fail,
            "rps": float(req), "fail_ps": float(fail),
            "p50_ms": round(9.5 * wobble, 2) if req else None,
            "p95_ms": round(31.0 * wobble, 2) if req else None,
            "p99_ms": round(58.0 * wobble, 2) if req else None,
            "rows": rows,
        })

    requests = []
    for method, name, _share, mean, _every in REQUESTS:
        count, fails = totals[f"{method} {name}"]
        if name == "/static/logo.png":
            codes = {"200": count - fails, "404": fails}
            errors = {"404 Not Found": fails}
        elif name == "/node/:nid":
            codes = {"200": count - refused, "0": refused}
            errors = {"Cannot connect to host 127.0.0.1:8080 [Connection refused]": refused}
        elif method == "POST":
            codes = {"200": count - 2, "302": 2}
            errors = {}
        else:
            codes, errors = {"200": count}, {}
        row = _row(name, count, fails, mean, codes, errors)
        row["method"] = method
        answered = count - int(codes.get("0", 0))  # no response, no body
        row["bytes"] = answered * (512 if method == "POST" else 2048 + 64 * len(name))
        row["mean_bytes"] = row["bytes"] / count if count else None
        requests.append(row)

    all_count = sum(r["count"] for r in requests)
    all_fails = sum(r["fail_count"] for r in requests)
    all_codes: dict[str, int] = {}
    all_errors: dict[str, int] = {}
    for r in requests:
        for k, v in r["status_codes"].items():
            all_codes[k] = all_codes.get(k, 0) + v
        for k, v in r["errors"].items():
            all_errors[k] = all_errors.get(k, 0) + v
    mean = round(sum(r["count"] * r["mean_ms"] for r in requests) / all_count, 3)
    aggregated = _row("Aggregated", all_count, all_fails, mean, all_codes, all_errors)
    aggregated["method"] = ""
    aggregated["bytes"] = sum(r["bytes"] for r in requests)
    aggregated["mean_bytes"] = aggregated["bytes"] / all_count
    aggregated["min_ms"] = min(r["min_ms"] for r in requests)
    aggregated["max_ms"] = max(r["max_ms"] for r in requests)

    c = {f"{r['method']} {r['name']}": r["count"] for r in requests}
    transactions = []
    for s_idx, scenario, t_idx, name, count, fails, mean in [
        (0, "AnonBrowsingUser", 0, "(Anon) front page", c["GET /"] * 3 // 4, c["GET /static/logo.png"] // 9,
         21.5),
        (0, "AnonBrowsingUser", 1, "(Anon) node page", c["GET /node/:nid"], refused, 17.0),
        (1, "AuthBrowsingUser", 0, "(Auth) login", c["POST /user/login"], 0, 60.3),
        (1, "AuthBrowsingUser", 1, "(Auth) front page", c["GET /"] // 4, 0, 12.2),
    ]:
        row = _row(name, count, fails, mean)
        row.update(scenario=scenario, scenario_index=s_idx, transaction_index=t_idx)
        transactions.append(row)

    scenarios = []
    for name, users, count, fails, mean in [
        ("AnonBrowsingUser", 6, 1840, refused, 1310.0),
        ("AuthBrowsingUser", 2, 212, 0, 2875.5),
    ]:
        row = _row(name, count, fails, mean)
        row["users"] = users
        scenarios.append(row)

    return {
        "schema": 1,
        "version": "0.1.0",
        "mode": "gaggle",
        "started_at": "2026-11-23T15:00:00.000000+00:00",
        "ended_at": "2026-11-23T15:01:00.000000+00:00",
        "duration_s": float(DURATION_S),
        "users": 8,
        "host": "http://127.0.0.1:8080",
        "hatch_rate": 2.0,
        "run_time_s": 56.0,
        "iterations": None,
        "metrics_reset": False,
        "phases": [
            {"name": "ramp-up", "started_at": "2026-11-23T15:00:00.000000+00:00", "duration_s": 4.0},
            {"name": "steady", "started_at": "2026-11-23T15:00:04.000000+00:00", "duration_s": 52.0},
            {"name": "stop", "started_at": "2026-11-23T15:00:56.000000+00:00", "duration_s": 4.0},
        ],
        "workers": [
            {"index": 1, "id": "worker-a1b2c3", "host": "loadgen-1", "users": 4,
             "requests": all_count // 2 + 7, "failures": all_fails // 2},
            {"index": 2, "id": "worker-d4e5f6", "host": "loadgen-2", "users": 4,
             "requests": all_count - all_count // 2 - 7, "failures": all_fails - all_fails // 2},
        ],
        "scenarios": scenarios,
        "transactions": transactions,
        "requests": requests,
        "aggregated": aggregated,
        "errors": [
            {"method": "GET", "name": "/static/logo.png", "error": "404 Not Found",
             "count": totals["GET /static/logo.png"][1]},
            {"method": "GET", "name": "/node/:nid",
             "error": "Cannot connect to host 127.0.0.1:8080 [Connection refused]", "count": refused},
        ],
        "series": {"interval_s": 1, "started_at": STARTED_EPOCH, "points": points},
    }


def empty_report() -> dict[str, Any]:
    """A run that made no request at all (for example the host was never reached)."""
    agg = _row("Aggregated", 0, 0, 0.0)
    agg["method"] = ""
    agg["bytes"], agg["mean_bytes"] = 0, None
    return {
        "schema": 1, "version": "0.1.0", "mode": "standalone",
        "started_at": "2026-11-23T15:00:00.000000+00:00",
        "ended_at": "2026-11-23T15:00:00.500000+00:00",
        "duration_s": 0.0, "users": 0, "host": "http://127.0.0.1:8080",
        "hatch_rate": 1.0, "run_time_s": None, "iterations": None, "metrics_reset": False,
        "phases": [], "workers": [], "scenarios": [], "transactions": [], "requests": [],
        "aggregated": agg, "errors": [],
        "series": {"interval_s": 1, "started_at": STARTED_EPOCH, "points": []},
    }


def full_report() -> dict[str, Any]:
    """The sample with every later addition filled in: response sizes, coordinated-omission
    figures, a test plan, control events, dropped iterations, the transactions' Aggregated
    row and an exception raised by a transaction."""
    r = sample_report()
    for row in [*r["requests"], r["aggregated"]]:
        row["mean_bytes"] = 1536.0 if row["method"] != "POST" else 210.5
        row["bytes"] = int(row["mean_bytes"] * row["count"])
        row["co"] = None
    slow = r["requests"][3]  # POST /user/login, the slowest
    slow["co"] = {
        "count": slow["count"] + 40, "synthetic": 40, "mean_ms": 61.0, "max_ms": 900.0, "median_ms": 44.0,
        "percentiles_ms": {"50": 44.0, "75": 70.0, "90": 120.0, "95": 180.0, "99": 400.0, "99.9": 850.0},
    }
    r["aggregated"]["co"] = {
        "count": r["aggregated"]["count"] + 40, "synthetic": 40, "mean_ms": 12.9, "max_ms": 900.0,
        "median_ms": 10.6, "percentiles_ms": {"50": 10.6, "75": 15.0, "90": 21.5, "95": 28.0, "99": 47.0,
                                              "99.9": 120.0},
    }  # fmt: skip
    r["co_mitigation"] = "average"
    tx = r["transactions"]
    r["aggregated_transactions"] = _row("Aggregated", sum(t["count"] for t in tx), sum(t["fail_count"] for t in tx),
                                        19.8)  # fmt: skip
    tx[2]["errors"] = {"KeyError: 'form_build_id'": 4, "TimeoutError: login page": 1}
    tx[2]["fail_count"] = 5
    r["test_plan"] = "8,4s;8,52s;0,4s"
    r["plan"] = [
        {"step": 1, "action": "increase", "from": 0, "to": 8, "t": 0.0,
         "started_at": "2026-11-23T15:00:00.000000+00:00", "ended_at": "2026-11-23T15:00:04.000000+00:00",
         "duration_s": 4.0},
        {"step": 2, "action": "maintain", "from": 8, "to": 8, "t": 4.0,
         "started_at": "2026-11-23T15:00:04.000000+00:00", "ended_at": "2026-11-23T15:00:56.000000+00:00",
         "duration_s": 52.0},
        {"step": 3, "action": "decrease", "from": 8, "to": 0, "t": 56.0,
         "started_at": "2026-11-23T15:00:56.000000+00:00", "ended_at": "2026-11-23T15:01:00.000000+00:00",
         "duration_s": 4.0},
    ]  # fmt: skip
    r["events"] = [
        {"t": 30.0, "at": "2026-11-23T15:00:30.000000+00:00", "command": "users", "value": "6", "by": "ops@host"},
    ]
    r["dropped_iterations"] = 0
    return r
