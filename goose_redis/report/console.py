"""Report dict -> Goose-layout console tables (plain text)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
    truncate,
)
from goose_redis.thresholds import measured_text
from goose_redis.verdict import integrity_problems

NAME_MIN = 24
NAME_MAX = 40
NUM_MIN = 6

# A table line is a row of cells, SEP (a ``-----`` line) or a str written as is
# (group headings such as ``1: ScenarioName`` span the whole line).
SEP = None
Line = list[str] | str | None


@dataclass
class Table:
    headers: list[str]
    lines: list[Line]
    left: int = 1  # the first ``left`` columns are text (left-aligned), the rest numbers
    caption: str | None = None


def _widths(table: Table, name_width: int) -> list[int]:
    widths = [name_width] + [len(h) if i < table.left else max(NUM_MIN, len(h)) for i, h in enumerate(table.headers)][
        1:
    ]
    for line in table.lines:
        if isinstance(line, list):
            for i, cell in enumerate(line[1:], start=1):
                widths[i] = max(widths[i], len(cell))
    return widths


def _render_tables(tables: list[Table], name_width: int) -> list[str]:
    """Tables stacked Goose-style: one rule between them, every rule the same length."""
    all_widths = [_widths(t, name_width) for t in tables]
    total = max(sum(w) + 3 * (len(w) - 1) for w in all_widths)
    rule = " " + "-" * total
    out = [rule]
    for table, widths in zip(tables, all_widths, strict=True):
        # Spread the slack over the number columns so every table is as wide as the widest.
        numeric = list(range(table.left, len(widths))) or [len(widths) - 1]
        slack = total - (sum(widths) + 3 * (len(widths) - 1))
        for k in range(slack):
            widths[numeric[k % len(numeric)]] += 1

        def fmt_row(cells: list[str], widths: list[int] = widths, left: int = table.left) -> str:
            parts = [truncate(cells[0], widths[0]).ljust(widths[0])]
            for i, (c, w) in enumerate(zip(cells[1:], widths[1:], strict=True), start=1):
                parts.append(c.ljust(w) if i < left else c.rjust(w))
            return (" " + " | ".join(parts)).rstrip()

        if table.caption:
            out += [" " + table.caption, rule]
        out += [fmt_row(table.headers), rule]
        for line in table.lines:
            if line is SEP:
                out.append(rule)
            elif isinstance(line, str):
                out.append(" " + line)
            else:
                out.append(fmt_row(line))
        if out[-1] != rule:
            out.append(rule)
    return out


def _name_width(names: list[str]) -> int:
    longest = max((len(n) for n in names), default=0)
    return min(NAME_MAX, max(NAME_MIN, longest))


Cells = Callable[[Mapping[str, Any]], list[str]]


def _counts(r: Mapping[str, Any]) -> list[str]:
    return [
        fmt_int(r.get("count", 0)),
        fmt_fails(int(r.get("fail_count", 0)), r.get("fail_pct")),
        fmt_rate(r.get("rps")),
        fmt_rate(r.get("fail_ps")),
    ]


def _timings(r: Mapping[str, Any]) -> list[str]:
    return [fmt_ms(r.get("mean_ms")), fmt_ms(r.get("min_ms")), fmt_ms(r.get("max_ms")), fmt_ms(r.get("median_ms"))]


def _percentiles(r: Mapping[str, Any]) -> list[str]:
    return [fmt_ms(percentile(r, key)) for key, _ in PERCENTILES] + [fmt_ms(r.get("max_ms"))]


TIMING_HEADERS = ["Avg (ms)", "Min", "Max", "Median"]
PERCENTILE_HEADERS = [label for _, label in PERCENTILES] + ["max"]
PERCENTILE_CAPTION = "Slowest response within the given share of requests (in ms):"


def _section(title: str) -> list[str]:
    return ["", f" === {title} ==="]


def _families(lines_of: Callable[[Cells], list[Line]], count_headers: list[str]) -> list[Table]:
    return [
        Table(["Name", *count_headers], lines_of(_counts)),
        Table(["Name", *TIMING_HEADERS], lines_of(_timings)),
        Table(["Name", *PERCENTILE_HEADERS], lines_of(_percentiles), caption=PERCENTILE_CAPTION),
    ]


def _requests(report: Mapping[str, Any]) -> list[str]:
    rows: list[Mapping[str, Any]] = list(report.get("requests") or [])
    out = _section("PER REQUEST METRICS")
    if not rows:
        return out + [" No requests were made."]
    agg: Mapping[str, Any] = report.get("aggregated") or {}
    labels = [request_label(r) for r in rows]
    agg_label = str(agg.get("name") or "Aggregated")

    def lines_of(cells: Cells) -> list[Line]:
        lines: list[Line] = [[label, *cells(r)] for label, r in zip(labels, rows, strict=True)]
        if agg:
            lines += [SEP, [agg_label, *cells(agg)]]
        return lines

    def codes(r: Mapping[str, Any]) -> list[str]:
        return [fmt_status_codes(r.get("status_codes"))]

    tables = _families(lines_of, ["# reqs", "# fails", "req/s", "fail/s"])
    tables.append(Table(["Name", "Status codes"], lines_of(codes), left=2))
    return out + _render_tables(tables, _name_width([*labels, agg_label]))


def _transactions(report: Mapping[str, Any]) -> list[str]:
    groups = grouped_transactions(report)
    out = _section("PER TRANSACTION METRICS")
    if not groups:
        return out + [" No transactions were run."]

    def label(n: int, r: Mapping[str, Any]) -> str:
        return f"  {n}: {r.get('name', '')}"

    agg: Mapping[str, Any] = report.get("aggregated_transactions") or {}

    def lines_of(cells: Cells) -> list[Line]:
        lines: list[Line] = []
        for s_num, s_name, rows in groups:
            lines.append(f"{s_num}: {s_name}")
            lines += [[label(n, r), *cells(r)] for n, r in rows]
        if agg:
            lines += [SEP, ["Aggregated", *cells(agg)]]
        return lines

    tables = _families(lines_of, ["# times run", "# fails", "trans/s", "fail/s"])
    return out + _render_tables(tables, _name_width([label(n, r) for _, _, g in groups for n, r in g]))


def _scenarios(report: Mapping[str, Any]) -> list[str]:
    rows: list[Mapping[str, Any]] = list(report.get("scenarios") or [])
    out = _section("PER SCENARIO METRICS")
    if not rows:
        return out + [" No scenario iterations were run."]
    labels = [f"{i}: {r.get('name', '')}" for i, r in enumerate(rows, start=1)]

    def lines_of(cells: Cells) -> list[Line]:
        return [[label, *cells(r)] for label, r in zip(labels, rows, strict=True)]

    def counts(r: Mapping[str, Any]) -> list[str]:
        return [fmt_int(r.get("users", 0)), *_counts(r)]

    tables = _families(lines_of, ["# users", "# times run", "# fails", "iter/s", "fail/s"])
    tables[0].lines = lines_of(counts)
    return out + _render_tables(tables, _name_width(labels))


def _corrected(report: Mapping[str, Any]) -> list[str]:
    """Coordinated-omission corrected figures beside the raw ones, when the run corrected any."""
    pairs = co_rows(report)
    if not pairs:
        return []
    labels = [request_label(r) for r, _ in pairs]
    lines: list[Line] = [
        [label, fmt_int(co.get("synthetic", 0)), *[co_pair(r, co, key) for _, key in CO_COLUMNS]]
        for label, (r, co) in zip(labels, pairs, strict=True)
    ]
    mode = str(report.get("co_mitigation") or "")
    caption = f"Raw / corrected for coordinated omission{f' (--co-mitigation {mode})' if mode else ''}, in ms:"
    table = Table(["Name", "synthetic", *[label for label, _ in CO_COLUMNS]], lines, caption=caption)
    return _section("COORDINATED OMISSION") + _render_tables([table], _name_width(labels))


def _exceptions(report: Mapping[str, Any]) -> list[str]:
    found = exceptions(report)
    if not found:
        return []
    labels = [e["error"] for e in found]
    width = min(72, max(NAME_MIN, max(len(s) for s in labels)))
    lines: list[Line] = [
        [e["error"], f"{e['scenario']}: {e['transaction']}", fmt_int(e["count"])] for e in found
    ]
    return _section("EXCEPTIONS") + _render_tables([Table(["Exception", "Transaction", "Count"], lines, left=2)], width)


def _errors(report: Mapping[str, Any]) -> list[str]:
    errors: list[Mapping[str, Any]] = list(report.get("errors") or [])
    if not errors:
        return []
    labels = [str(e.get("error", "")) for e in errors]
    # Error texts are often long: allow a wider first column than request names.
    width = min(72, max(NAME_MIN, max(len(s) for s in labels)))
    lines: list[Line] = [
        [text, request_label(e), fmt_int(e.get("count", 0))] for text, e in zip(labels, errors, strict=True)
    ]
    return _section("ERRORS") + _render_tables([Table(["Error", "Request", "Count"], lines, left=2)], width)


def _overview(report: Mapping[str, Any], running: bool = False) -> list[str]:
    workers: list[Mapping[str, Any]] = list(report.get("workers") or [])
    mode = str(report.get("mode", "standalone"))
    if workers:
        mode += f" ({len(workers)} worker{'s' if len(workers) != 1 else ''})"
    users = fmt_int(report.get("users"))
    if report.get("hatch_rate") is not None:
        users += f" (hatch rate {float(report['hatch_rate']):g}/s)"
    limits = []
    if report.get("run_time_s") is not None:
        limits.append(f"run time {fmt_seconds(float(report['run_time_s']))}")
    if report.get("iterations") is not None:
        limits.append(f"{fmt_int(report['iterations'])} iterations per user")
    pairs = [
        ("Mode", mode),
        ("Host", str(report.get("host") or "-")),
        ("Users", users),
        ("Limit", ", ".join(limits) or "none"),
        ("Started", fmt_timestamp(report.get("started_at"))),
        # A running report is a snapshot: its end is the moment it was taken.
        ("Now" if running else "Ended", fmt_timestamp(report.get("ended_at"))),
        ("Duration", duration_text(report, running)),
    ]
    if "dropped_iterations" in report:
        pairs.append(("Dropped", f"{fmt_int(report.get('dropped_iterations'))} iterations (due when no user was free)"))
    if report.get("metrics_reset"):
        pairs.append(("Metrics", "reset when all users were launched"))
    out = _section("OVERVIEW")
    key_w = max(len(k) for k, _ in pairs) + 1
    out += [f" {(k + ':').ljust(key_w)} {v}" for k, v in pairs]

    tables = []
    steps = plan_rows(report)
    if steps:
        tables.append(Table(["Step", "Action", "Users", "Started", "Duration"], list(steps), left=4))
    phases: list[Mapping[str, Any]] = list(report.get("phases") or [])
    if phases:
        lines: list[Line] = [
            [str(p.get("name", "")), fmt_timestamp(p.get("started_at")), fmt_seconds(p.get("duration_s"))]
            for p in phases
        ]
        tables.append(Table(["Phase", "Started", "Duration"], lines, left=2))
    labels = [f"{w.get('index', '')}: {w.get('id', '')}" for w in workers]
    if workers:
        lines = []
        for label, w in zip(labels, workers, strict=True):
            req, fails = int(w.get("requests", 0)), int(w.get("failures", 0))
            lines.append(
                [
                    label,
                    str(w.get("host", "")),
                    fmt_int(w.get("users", 0)),
                    fmt_int(req),
                    fmt_fails(fails, fail_pct(fails, req)),
                ]
            )
        tables.append(Table(["Worker", "Host", "Users", "# reqs", "# fails"], lines, left=2))
    if tables:
        out += _render_tables(tables, _name_width(labels))
    return out


def render_tables(report: Mapping[str, Any], running: bool = False) -> str:
    """Every section of the console report, as one string ending in a newline.

    ``running``: a snapshot while the run goes on (``--running-metrics``): the overview
    says "Now" where a finished run says "Ended".
    """
    out = _scenarios(report) + _transactions(report) + _requests(report) + _corrected(report)
    out += _exceptions(report) + _errors(report) + _overview(report, running)
    out += _verdict(report)
    return "\n".join(out).lstrip("\n") + "\n"


# ---------------------------------------------------------------- verdict (docs/verdict.md)


def _verdict(report: Mapping[str, Any]) -> list[str]:
    """THRESHOLDS (expression, measured, result), then what made the verdict, at the very end.

    Nothing when there were no thresholds and the totals are complete: the usual run looks as before.
    """
    results: list[Mapping[str, Any]] = list(report.get("thresholds") or [])
    verdict: Mapping[str, Any] = report.get("verdict") or {}
    problems = integrity_problems(report)
    if not results and problems is None and not verdict.get("aborted"):
        return []
    out = _section("THRESHOLDS")
    if results:
        lines: list[Line] = [
            [
                str(r.get("expr", "")),
                measured_text(r),
                "pass" if r.get("passed") else "FAIL",
            ]
            for r in results
        ]
        names = [str(r.get("expr", "")) for r in results]
        out += _render_tables([Table(["Threshold", "Measured", "Result"], lines, left=1)], _name_width(names))
    else:
        out.append(" No thresholds were given.")
    out += [f" INCOMPLETE: {p}" for p in problems or []]
    if verdict:
        code = verdict.get("exit_code")
        if verdict.get("passed"):
            out.append(f" Verdict: passed (exit code {code})")
        else:
            out.append(f" Verdict: FAILED (exit code {code})")
            out += [f"   - {reason}" for reason in verdict.get("reasons") or []]
    return out
