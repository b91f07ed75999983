"""Report dict -> GitHub-flavoured Markdown (for CI job summaries; no charts)."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from typing import Any

from goose_redis.report.fmt import (
    CO_COLUMNS,
    PERCENTILES,
    co_pair,
    co_rows,
    duration_text,
    exceptions,
    fail_pct,
    fmt_fails,
    fmt_int,
    fmt_ms,
    fmt_rate,
    fmt_seconds,
    fmt_status_codes,
    fmt_timestamp,
    grouped_transactions,
    percentile,
    plan_rows,
    request_label,
)
from goose_redis.thresholds import measured_text
from goose_redis.verdict import integrity_problems

Row = Mapping[str, Any]

# Characters Markdown would read as emphasis, code or a cell border.
_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_|"})


def md_cell(text: object) -> str:
    """One table cell: HTML-escaped, Markdown-escaped, on one line."""
    flat = " ".join(str(text).split())
    return html.escape(flat, quote=False).translate(_MD_SPECIAL)


def _table(headers: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """A GFM table; cells must already be escaped. Columns from ``left`` on align right."""
    align = [":---" if i < left else "---:" for i in range(len(headers))]
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def _counts(r: Row) -> list[str]:
    return [
        fmt_int(r.get("count", 0)),
        fmt_fails(int(r.get("fail_count", 0)), r.get("fail_pct")),
        fmt_rate(r.get("rps")),
        fmt_rate(r.get("fail_ps")),
    ]


def _timings(r: Row) -> list[str]:
    return [fmt_ms(r.get("mean_ms")), fmt_ms(r.get("min_ms")), fmt_ms(r.get("max_ms")), fmt_ms(r.get("median_ms"))]


def _percentiles(r: Row) -> list[str]:
    return [fmt_ms(percentile(r, key)) for key, _ in PERCENTILES] + [fmt_ms(r.get("max_ms"))]


TIMING_HEADERS = ["Avg (ms)", "Min (ms)", "Max (ms)", "Median (ms)"]
PERCENTILE_HEADERS = [f"{label} (ms)" for _, label in PERCENTILES] + ["Max (ms)"]

Named = list[tuple[str, Row | None]]  # (escaped label, row); row None = a group heading


def _families(named: Named, count_headers: list[str], counts: Callable[[Row], list[str]]) -> list[str]:
    out: list[str] = []
    for headers, cells in (
        (count_headers, counts),
        (TIMING_HEADERS, _timings),
        (PERCENTILE_HEADERS, _percentiles),
    ):
        rows = [[label, *(cells(r) if r is not None else [""] * len(headers))] for label, r in named]
        out += _table(["Name", *headers], rows)
    return out


def _with_unit(text: str, unit: str) -> str:
    return text if text == "-" else f"{text} {unit}"


def _overview(report: Mapping[str, Any]) -> list[str]:
    agg: Row = report.get("aggregated") or {}
    limits = []
    if report.get("run_time_s") is not None:
        limits.append(f"run time {fmt_seconds(float(report['run_time_s']))}")
    if report.get("iterations") is not None:
        limits.append(f"{fmt_int(report['iterations'])} iterations per user")
    hatch = report.get("hatch_rate")
    pairs = [
        ("Mode", str(report.get("mode", ""))),
        ("Host", str(report.get("host") or "-")),
        ("Users", fmt_int(report.get("users")) + (f" (hatch rate {float(hatch):g}/s)" if hatch else "")),
        ("Limit", ", ".join(limits) or "none"),
        ("Started", fmt_timestamp(report.get("started_at"))),
        ("Ended", fmt_timestamp(report.get("ended_at"))),
        ("Duration", duration_text(report)),
        ("Requests", fmt_int(agg.get("count", 0))),
        ("Failures", fmt_fails(int(agg.get("fail_count", 0)), agg.get("fail_pct"))),
        ("Throughput", f"{fmt_rate(agg.get('rps'))} req/s"),
        ("p95 response time", _with_unit(fmt_ms(percentile(agg, "95")), "ms")),
    ]
    if "dropped_iterations" in report:
        pairs.append(("Dropped iterations", f"{fmt_int(report.get('dropped_iterations'))} (due when no user was free)"))
    if report.get("metrics_reset"):
        pairs.append(("Metrics", "reset when all users were launched"))
    out = ["## Overview", ""]
    out += _table(["", "Value"], [[f"**{md_cell(k)}**", md_cell(v)] for k, v in pairs], left=2)

    steps = plan_rows(report)
    if steps:
        out += ["### Test plan", ""]
        out += _table(["Step", "Action", "Users", "Started", "Duration"], [[md_cell(c) for c in r] for r in steps], 4)
    phases = list(report.get("phases") or [])
    if phases:
        out += ["### Phases", ""]
        out += _table(
            ["Phase", "Started", "Duration"],
            [
                [
                    md_cell(p.get("name", "")),
                    md_cell(fmt_timestamp(p.get("started_at"))),
                    md_cell(fmt_seconds(p.get("duration_s"))),
                ]
                for p in phases
            ],
            left=2,
        )
    workers = list(report.get("workers") or [])
    if workers:
        out += ["### Workers", ""]
        rows = []
        for w in workers:
            req, fails = int(w.get("requests", 0)), int(w.get("failures", 0))
            rows.append(
                [
                    md_cell(w.get("index", "")),
                    md_cell(w.get("id", "")),
                    md_cell(w.get("host", "")),
                    fmt_int(w.get("users", 0)),
                    fmt_int(req),
                    fmt_fails(fails, fail_pct(fails, req)),
                ]
            )
        out += _table(["#", "Worker", "Host", "Users", "# reqs", "# fails"], rows, left=3)
    return out


def _corrected(report: Mapping[str, Any]) -> list[str]:
    pairs = co_rows(report)
    if not pairs:
        return []
    mode = report.get("co_mitigation")
    out = [f"Corrected for coordinated omission{f' ({md_cell(mode)})' if mode else ''}: raw / corrected, in ms.", ""]
    rows = [
        [md_cell(request_label(r)), fmt_int(co.get("synthetic", 0)), *[co_pair(r, co, key) for _, key in CO_COLUMNS]]
        for r, co in pairs
    ]
    return out + _table(["Name", "Synthetic", *[label for label, _ in CO_COLUMNS]], rows)


def render_markdown(report: Mapping[str, Any]) -> str:
    """The whole report as one Markdown document."""
    out = ["# goose-redis load test report", ""]
    out += _verdict(report)
    out += _overview(report)

    requests: list[Row] = list(report.get("requests") or [])
    out += ["## Per request metrics", ""]
    if requests:
        agg: Row = report.get("aggregated") or {}
        named: Named = [(md_cell(request_label(r)), r) for r in requests]
        if agg:
            named.append((f"**{md_cell(agg.get('name') or 'Aggregated')}**", agg))
        out += _families(named, ["# reqs", "# fails", "req/s", "fail/s"], _counts)
        out += _table(
            ["Name", "Status codes"],
            [[label, md_cell(fmt_status_codes(r.get("status_codes")))] for label, r in named if r is not None],
            left=2,
        )
        out += _corrected(report)
    else:
        out += ["No requests were made.", ""]

    groups = grouped_transactions(report)
    out += ["## Per transaction metrics", ""]
    if groups:
        named = []
        for s_num, s_name, rows in groups:
            named.append((f"**{s_num}: {md_cell(s_name)}**", None))
            named += [(f"&nbsp;&nbsp;{n}: {md_cell(r.get('name', ''))}", r) for n, r in rows]
        tx_agg: Row | None = report.get("aggregated_transactions")
        if tx_agg:
            named.append(("**Aggregated**", tx_agg))
        out += _families(named, ["# times run", "# fails", "trans/s", "fail/s"], _counts)
    else:
        out += ["No transactions were run.", ""]

    scenarios: list[Row] = list(report.get("scenarios") or [])
    out += ["## Per scenario metrics", ""]
    if scenarios:
        named = [(f"{i}: {md_cell(r.get('name', ''))}", r) for i, r in enumerate(scenarios, start=1)]
        out += _families(
            named,
            ["# users", "# times run", "# fails", "iter/s", "fail/s"],
            lambda r: [fmt_int(r.get("users", 0)), *_counts(r)],
        )
    else:
        out += ["No scenario iterations were run.", ""]

    found = exceptions(report)
    if found:
        out += ["## Exceptions", ""]
        out += _table(
            ["Transaction", "Exception", "Count"],
            [[md_cell(f"{e['scenario']}: {e['transaction']}"), md_cell(e["error"]), fmt_int(e["count"])]
             for e in found],
            left=2,
        )  # fmt: skip

    errors = list(report.get("errors") or [])
    out += ["## Errors", ""]
    if errors:
        out += _table(
            ["Request", "Error", "Count"],
            [[md_cell(request_label(e)), md_cell(e.get("error", "")), fmt_int(e.get("count", 0))] for e in errors],
            left=2,
        )
    else:
        out += ["No errors.", ""]

    version = report.get("version")
    if version:
        schema = md_cell(report.get("schema", ""))
        out += [f"<sub>goose-redis {md_cell(version)}, report schema {schema}</sub>", ""]
    return "\n".join(out)


# ---------------------------------------------------------------- verdict (docs/verdict.md)


def _verdict(report: Mapping[str, Any]) -> list[str]:
    """First thing in the document, where a CI job summary shows it: the result, why, the thresholds.

    Nothing when there were no thresholds and the totals are complete.
    """
    results: list[Row] = list(report.get("thresholds") or [])
    verdict: Row = report.get("verdict") or {}
    problems = integrity_problems(report)
    if not results and problems is None and not verdict.get("aborted"):
        return []
    out = ["## Verdict", ""]
    if verdict:
        word = "Passed" if verdict.get("passed") else "Failed"
        out += [f"**{word}** (exit code {md_cell(verdict.get('exit_code'))})", ""]
        out += [f"- {md_cell(reason)}" for reason in verdict.get("reasons") or []]
        out += [""] if verdict.get("reasons") else []
    out += [f"> **Incomplete:** {md_cell(p)}" for p in problems or []]
    out += [""] if problems else []
    if results:
        out += _table(
            ["Threshold", "Measured", "Result"],
            [
                [md_cell(r.get("expr", "")), md_cell(measured_text(r)), "pass" if r.get("passed") else "**FAIL**"]
                for r in results
            ],
            left=1,
        )
    return out
