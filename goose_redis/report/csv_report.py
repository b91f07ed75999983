"""Report dict -> CSV files, one per table family.

Naming rule: the path asked for holds the requests table, and every other family is
written beside it, its name the path's ``.csv`` suffix replaced by ``-<family>.csv``.
So ``--report-file out.csv`` writes

* ``out.csv``               one row per request, then the ``Aggregated`` row last
* ``out-transactions.csv``  one row per transaction (with its scenario)
* ``out-scenarios.csv``     one row per scenario
* ``out-series.csv``        one row per series point per request row, plus ``Aggregated``
                            (only that row fills ``users``, the percentiles and the
                            ``measured_*`` columns)
* ``out-errors.csv``        one row per distinct error
* ``out-thresholds.csv``    one row per ``--threshold`` (only for a run with thresholds)
* ``out-exceptions.csv``    one row per distinct exception raised by a transaction

A path without a ``.csv`` suffix is used whole as the stem of the others (``out`` ->
``out-transactions.csv``). Every file is written, with its header, even when it has no data rows.

Numbers are rounded for reading: every float (milliseconds, rates, percentages, mean sizes)
to 3 decimals; no thousands separator. A missing value (``null`` in the report) is an
empty cell. Status codes are ``code:count`` pairs joined by ``;`` (``200:12;404:1``).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from goose_redis.report.fmt import PERCENTILES, exceptions, status_code_items

Row = Mapping[str, Any]

FAMILIES = ("requests", "transactions", "scenarios", "series", "errors", "exceptions")
DECIMALS = 3  # ms, rates, percentages

# Row fields copied as they are, then the percentiles flattened to p50_ms .. p99.9_ms.
ROW_FIELDS = ["count", "fail_count", "fail_pct", "rps", "fail_ps", "mean_ms", "min_ms", "max_ms", "median_ms"]
STAT_COLUMNS = [*ROW_FIELDS, *[f"p{key}_ms" for key, _ in PERCENTILES]]
REQUEST_COLUMNS = ["name", "method", *STAT_COLUMNS, "status_codes", "bytes", "mean_bytes"]
TRANSACTION_COLUMNS = ["name", "scenario", *STAT_COLUMNS]
SCENARIO_COLUMNS = ["name", "users", *STAT_COLUMNS]
SERIES_COLUMNS = [
    "t",
    "name",
    "users",
    "requests",
    "failures",
    "rps",
    "fail_ps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "measured_requests",
    "measured_failures",
]
ERROR_COLUMNS = ["method", "name", "error", "count"]
EXCEPTION_COLUMNS = ["scenario", "transaction", "error", "count"]


def csv_paths(path: str) -> dict[str, str]:
    """The file each family is written to, by the naming rule above."""
    stem = path[:-4] if path.lower().endswith(".csv") else path
    return {family: path if family == "requests" else f"{stem}-{family}.csv" for family in FAMILIES}


def _cell(value: Any, decimals: int | None = DECIMALS) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and decimals is not None:
        return str(round(value, decimals))
    return str(value)


def status_codes_cell(codes: Mapping[str, int] | None) -> str:
    return ";".join(f"{code}:{count}" for code, count in status_code_items(codes))


def _stats(row: Row) -> list[str]:
    pct = row.get("percentiles_ms") or {}
    return [_cell(row.get(c)) for c in ROW_FIELDS] + [_cell(pct.get(key)) for key, _ in PERCENTILES]


def _write(path: str, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _series_rows(report: Mapping[str, Any]) -> list[list[str]]:
    series = report.get("series") or {}
    interval = float(series.get("interval_s") or 1)
    out: list[list[str]] = []
    for p in series.get("points") or []:
        t = _cell(p.get("t"))
        for name, pair in (p.get("rows") or {}).items():
            count, fails = int(pair[0]), int(pair[1])
            # Per-row points only carry counts; rates follow from the bucket width.
            out.append(
                [t, name, "", str(count), str(fails), _cell(count / interval), _cell(fails / interval)] + [""] * 5
            )
        out.append(
            [
                t,
                "Aggregated",
                _cell(p.get("users")),
                _cell(p.get("requests")),
                _cell(p.get("failures")),
                _cell(p.get("rps")),
                _cell(p.get("fail_ps")),
                _cell(p.get("p50_ms")),
                _cell(p.get("p95_ms")),
                _cell(p.get("p99_ms")),
                _cell(p.get("measured_requests")),
                _cell(p.get("measured_failures")),
            ]
        )
    return out


def write_csv(report: Mapping[str, Any], path: str) -> list[str]:
    """Write the CSV files for ``path`` (requests there, the rest beside it); returns them in ``FAMILIES`` order."""
    paths = csv_paths(path)
    Path(paths["requests"]).parent.mkdir(parents=True, exist_ok=True)

    def request(r: Row) -> list[str]:
        codes = status_codes_cell(r.get("status_codes"))
        sizes = [_cell(r.get("bytes")), _cell(r.get("mean_bytes"))]
        return [_cell(r.get("name")), _cell(r.get("method")), *_stats(r), codes, *sizes]

    rows = [request(r) for r in report.get("requests") or []]
    agg: Row | None = report.get("aggregated")
    if agg:
        rows.append(request({**agg, "name": agg.get("name") or "Aggregated"}))
    _write(paths["requests"], REQUEST_COLUMNS, rows)

    transactions = report.get("transactions") or []
    _write(
        paths["transactions"],
        TRANSACTION_COLUMNS,
        [[_cell(r.get("name")), _cell(r.get("scenario")), *_stats(r)] for r in transactions],
    )
    scenarios = report.get("scenarios") or []
    _write(
        paths["scenarios"],
        SCENARIO_COLUMNS,
        [[_cell(r.get("name")), _cell(r.get("users")), *_stats(r)] for r in scenarios],
    )
    _write(paths["series"], SERIES_COLUMNS, _series_rows(report))
    _write(
        paths["errors"],
        ERROR_COLUMNS,
        [
            [_cell(e.get("method")), _cell(e.get("name")), _cell(e.get("error")), _cell(e.get("count"))]
            for e in report.get("errors") or []
        ],
    )
    _write(
        paths["exceptions"],
        EXCEPTION_COLUMNS,
        [[_cell(e[c]) for c in EXCEPTION_COLUMNS] for e in exceptions(report)],
    )
    return [paths[f] for f in FAMILIES] + _write_thresholds(report, path)


# ---------------------------------------------------------------- thresholds (docs/verdict.md)

THRESHOLD_COLUMNS = ["expr", "row", "metric", "op", "limit", "value", "passed", "note"]


def thresholds_csv_path(path: str) -> str:
    """``out.csv`` -> ``out-thresholds.csv``, by the same naming rule as the other families."""
    stem = path[:-4] if path.lower().endswith(".csv") else path
    return f"{stem}-thresholds.csv"


def _write_thresholds(report: Mapping[str, Any], path: str) -> list[str]:
    """The sixth file, only for a run with thresholds: one row per expression, as given."""
    results = report.get("thresholds") or []
    if not results:
        return []
    target = thresholds_csv_path(path)
    _write(target, THRESHOLD_COLUMNS, [[_cell(r.get(c)) for c in THRESHOLD_COLUMNS] for r in results])
    return [target]
