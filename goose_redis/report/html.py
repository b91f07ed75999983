"""Report dict -> one self-contained HTML page (inline CSS and SVG, no script, no external resource)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from html import escape
from typing import Any

from goose_redis.report.charts import build_charts
from goose_redis.report.fmt import (
    CO_COLUMNS,
    PERCENTILES,
    co_pair,
    co_rows,
    duration_text,
    exceptions,
    fail_pct,
    fmt_bytes,
    fmt_fails,
    fmt_int,
    fmt_ms,
    fmt_rate,
    fmt_seconds,
    fmt_timestamp,
    grouped_transactions,
    percentile,
    plan_rows,
    request_label,
    status_code_items,
)
from goose_redis.report.svg import render_chart
from goose_redis.thresholds import measured_text
from goose_redis.verdict import integrity_problems

Row = Mapping[str, Any]

CSS = """
:root{--fg:#111827;--muted:#6b7280;--line:#e5e7eb;--bg:#f5f6f8;--card:#fff;--accent:#2563eb;--bad:#b91c1c}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.wrap{max-width:1240px;margin:0 auto;padding:0 24px}
header.top{background:#111827;color:#f9fafb;padding:22px 0 20px}
header.top h1{margin:0;font-size:22px;font-weight:650;letter-spacing:-.01em}
header.top .sub{margin:4px 0 0;color:#cbd5e1;font-size:13px}
header.top .sub span+span:before{content:"\\00b7";margin:0 8px;color:#64748b}
h2{font-size:17px;margin:30px 0 10px;font-weight:650}
h3{font-size:14px;margin:18px 0 8px;color:#374151;font-weight:600}
.cards{display:grid;grid-template-columns:repeat(6,1fr);gap:12px;margin-top:20px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px}
.card .k{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:22px;font-weight:650;margin-top:2px;font-variant-numeric:tabular-nums;white-space:nowrap}
.card .v small{font-size:13px;font-weight:500;color:var(--muted);margin-left:3px}
.card.bad .v{color:var(--bad)}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:14px;margin-top:14px}
.panel{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:8px 10px}
svg.chart{display:block;width:100%;height:auto}
svg.chart text{font-size:11px;fill:#4b5563}
svg.chart .chart-title{font-size:14px;font-weight:600;fill:#111827}
svg.chart .axis-title{font-size:10.5px;fill:#6b7280}
svg.chart .no-data{font-size:15px;fill:#9ca3af}
svg.chart .band-label{font-size:10px;fill:#6b7280;letter-spacing:.03em}
svg.chart .plot-bg{fill:#fff;stroke:#e5e7eb}
svg.chart .grid{stroke:#eef0f3}
svg.chart .axis{stroke:#9ca3af}
svg.chart .line{fill:none;stroke-width:2;stroke-linejoin:round;stroke-linecap:round}
svg.chart .area{opacity:.12;stroke:none}
svg.chart .band{opacity:.5}
.band-ramp-up{fill:#fef3c7}.band-steady{fill:#dcfce7}.band-stop{fill:#fee2e2}.band-other{fill:#e0e7ff}
.band-increase{fill:#fef3c7}.band-maintain{fill:#dcfce7}.band-decrease{fill:#fee2e2}
svg.chart .hover rect{fill:#111827;fill-opacity:0}svg.chart .hover rect:hover{fill-opacity:.07}
svg.chart .marker line{stroke:#7c3aed;stroke-width:1.5;stroke-dasharray:4 3}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:14px;align-items:start}
.scroll{overflow-x:auto;background:var(--card);border:1px solid var(--line);border-radius:10px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:6px 9px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th{font-size:12px;color:var(--muted);font-weight:600;background:#fafafa}
th:first-child,td:first-child{text-align:left}
td.text,th.text{text-align:left}
td.wrap{white-space:normal;min-width:220px}
td.codes{white-space:normal;min-width:150px;line-height:1.9}
.note{color:var(--muted);font-size:12px;margin:6px 2px 0}
tbody tr:hover td{background:#f9fafb}
tr:last-child td{border-bottom:none}
tfoot td{font-weight:650;background:#f8fafc;border-top:2px solid var(--line);border-bottom:none}
tr.group td{background:#f3f4f6;font-weight:600;text-align:left;color:#374151}
td.indent{padding-left:26px}
td.bad{color:var(--bad);font-weight:600}
.method{display:inline-block;min-width:44px;font-size:11px;font-weight:700;color:#1e40af;background:#dbeafe;
border-radius:4px;padding:1px 5px;margin-right:6px;text-align:center}
.code{display:inline-block;font-size:11px;font-weight:700;border-radius:4px;padding:1px 5px;
margin:1px 2px 1px 0}
.code.c0{background:#e5e7eb;color:#374151}.code.c2{background:#dcfce7;color:#166534}
.code.c3{background:#e0f2fe;color:#075985}.code.c4{background:#fef3c7;color:#92400e}
.code.c5{background:#fee2e2;color:#991b1b}
.kv td{text-align:left}.kv td:first-child{color:var(--muted);width:38%}
.empty{color:var(--muted);background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px}
footer{color:var(--muted);font-size:12px;padding:28px 0 36px}
@media (max-width:900px){.cards{grid-template-columns:repeat(3,1fr)}.charts,.grid2{grid-template-columns:1fr}}
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


# ---------------------------------------------------------------- tables


def _table(head: list[str], body: Iterable[str], foot: str = "", text_cols: int = 1, last_text: bool = False) -> str:
    """A table in a scrolling card; header cells of text columns align left like their data."""

    def is_text(i: int) -> bool:
        return i < text_cols or (last_text and i == len(head) - 1)

    ths = "".join(f"<th{' class=text' if is_text(i) else ''}>{_e(h)}</th>" for i, h in enumerate(head))
    tfoot = f"<tfoot>{foot}</tfoot>" if foot else ""
    rows = "".join(body)
    table = f"<table><thead><tr>{ths}</tr></thead><tbody>{rows}</tbody>{tfoot}</table>"
    return f'<div class="scroll">{table}</div>'


def _codes_html(codes: Mapping[str, int] | None) -> str:
    items = status_code_items(codes)
    if not items:
        return "-"
    return "".join(
        f'<span class="code c{_e(code[0]) if code[:1] in "02345" and code else "0"}">{_e(code)}</span>{count:,} '
        for code, count in items
    ).strip()


def _stat_cells(r: Row, first: str) -> str:
    fails = int(r.get("fail_count", 0))
    cells = [
        f"<td>{fmt_int(r.get('count', 0))}</td>",
        ("<td class=bad>" if fails else "<td>") + _e(fmt_fails(fails, r.get("fail_pct"))) + "</td>",
        f"<td>{fmt_rate(r.get('rps'))}</td>",
        f"<td>{fmt_rate(r.get('fail_ps'))}</td>",
        f"<td>{fmt_ms(r.get('mean_ms'))}</td>",
        f"<td>{fmt_ms(r.get('min_ms'))}</td>",
        *[f"<td>{fmt_ms(percentile(r, key))}</td>" for key, _ in PERCENTILES],
        f"<td>{fmt_ms(r.get('max_ms'))}</td>",
    ]
    return first + "".join(cells)


def _stat_head(count: str, rate: str) -> list[str]:
    return [count, "# fails", rate, "fail/s", "Avg", "Min", *[label for _, label in PERCENTILES], "Max"]


def _requests_section(report: Mapping[str, Any]) -> str:
    rows: list[Row] = list(report.get("requests") or [])
    if not rows:
        return '<p class="empty">No requests were made.</p>'
    agg: Row | None = report.get("aggregated")
    # Response sizes came with later reports: the column shows when the rows carry them.
    sizes = any("mean_bytes" in r for r in [*rows, *([agg] if agg else [])])

    def name_cell(r: Row) -> str:
        method = str(r.get("method") or "")
        badge = f'<span class="method">{_e(method)}</span>' if method else ""
        return f"<td>{badge}{_e(r.get('name', ''))}</td>"

    def row_html(r: Row, first: str) -> str:
        codes = _codes_html(r.get("status_codes"))
        size = f"<td>{_e(fmt_bytes(r.get('mean_bytes')))}</td>" if sizes else ""
        return f"<tr>{_stat_cells(r, first)}{size}<td class='text codes'>{codes}</td></tr>"

    body = [row_html(r, name_cell(r)) for r in rows]
    foot = row_html(agg, "<td>" + _e(agg.get("name") or "Aggregated") + "</td>") if agg else ""
    head = ["Request", *_stat_head("# reqs", "req/s"), *(["Avg size"] if sizes else []), "Status codes"]
    note = "Response times in milliseconds" + ("; Avg size: mean response body received." if sizes else ".")
    return _table(head, body, foot, last_text=True) + f'<p class="note">{note}</p>' + _corrected_section(report)


def _corrected_section(report: Mapping[str, Any]) -> str:
    """Coordinated-omission corrected figures beside the raw ones (only when the run corrected)."""
    pairs = co_rows(report)
    if not pairs:
        return ""
    body = [
        f"<tr><td>{_e(request_label(r))}</td><td>{fmt_int(co.get('synthetic', 0))}</td>"
        + "".join(f"<td>{_e(co_pair(r, co, key))}</td>" for _, key in CO_COLUMNS)
        + "</tr>"
        for r, co in pairs
    ]
    mode = report.get("co_mitigation")
    head = ["Request", "Synthetic", *[f"{label} raw / corrected" for label, _ in CO_COLUMNS]]
    return (
        f"<h3 id='co'>Corrected for coordinated omission{f' ({_e(mode)})' if mode else ''}</h3>"
        + _table(head, body)
        + '<p class="note">Milliseconds; synthetic: requests added for the ones a stalled user could not send.</p>'
    )


def _transactions_section(report: Mapping[str, Any]) -> str:
    groups = grouped_transactions(report)
    if not groups:
        return '<p class="empty">No transactions were run.</p>'
    head = ["Transaction", *_stat_head("# runs", "runs/s")]
    body = []
    for s_num, s_name, rows in groups:
        body.append(f'<tr class="group"><td colspan="{len(head)}">{s_num}: {_e(s_name)}</td></tr>')
        for n, r in rows:
            first = f"<td class=indent>{n}: " + _e(r.get("name", "")) + "</td>"
            body.append(f"<tr>{_stat_cells(r, first)}</tr>")
    agg: Row | None = report.get("aggregated_transactions")
    foot = f"<tr>{_stat_cells(agg, '<td>Aggregated</td>')}</tr>" if agg else ""
    return _table(head, body, foot)


def _exceptions_section(report: Mapping[str, Any]) -> str:
    found = exceptions(report)
    if not found:
        return '<p class="empty">No transaction raised an exception.</p>'
    body = [
        f"<tr><td>{fmt_int(e['count'])}</td><td class=text>{_e(e['scenario'])}: {_e(e['transaction'])}</td>"
        f"<td class='text wrap'>{_e(e['error'])}</td></tr>"
        for e in found
    ]
    return _table(["Count", "Transaction", "Exception"], body, text_cols=3)


def _scenarios_section(report: Mapping[str, Any]) -> str:
    rows: list[Row] = list(report.get("scenarios") or [])
    if not rows:
        return '<p class="empty">No scenario iterations were run.</p>'
    head = ["Scenario", "Users", *_stat_head("# iterations", "iter/s")]
    body = []
    for i, r in enumerate(rows, start=1):
        first = f"<td>{i}: " + _e(r.get("name", "")) + "</td><td>" + fmt_int(r.get("users", 0)) + "</td>"
        body.append(f"<tr>{_stat_cells(r, first)}</tr>")
    return _table(head, body) + '<p class="note">Iteration times in milliseconds, waits included.</p>'


def _errors_section(report: Mapping[str, Any]) -> str:
    errors: list[Row] = list(report.get("errors") or [])
    if not errors:
        return '<p class="empty">No errors.</p>'
    body = [
        f"<tr><td>{fmt_int(e.get('count', 0))}</td><td class=text><span class=method>"
        f"{_e(e.get('method', ''))}</span>{_e(e.get('name', ''))}</td>"
        f"<td class='text wrap'>{_e(e.get('error', ''))}</td></tr>"
        for e in errors
    ]
    return _table(["Count", "Request", "Error"], body, text_cols=3)


def _overview_section(report: Mapping[str, Any]) -> str:
    limits = []
    if report.get("run_time_s") is not None:
        limits.append(f"run time {fmt_seconds(float(report['run_time_s']))}")
    if report.get("iterations") is not None:
        limits.append(f"{fmt_int(report['iterations'])} iterations per user")
    hatch = report.get("hatch_rate")
    pairs = [
        ("Mode", report.get("mode", "")),
        ("Host", report.get("host") or "-"),
        ("Users", fmt_int(report.get("users"))),
        ("Hatch rate", f"{float(hatch):g} users/s" if hatch is not None else "-"),
        ("Limit", ", ".join(limits) or "none"),
        ("Started", fmt_timestamp(report.get("started_at"))),
        ("Ended", fmt_timestamp(report.get("ended_at"))),
        ("Duration", duration_text(report)),
        ("Metrics reset after ramp-up", "yes" if report.get("metrics_reset") else "no"),
    ]
    if "dropped_iterations" in report:
        pairs.append(("Dropped iterations", f"{fmt_int(report.get('dropped_iterations'))} (due when no user was free)"))
    kv = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in pairs)
    left = f'<div class="scroll"><table class="kv"><tbody>{kv}</tbody></table></div>'

    steps = plan_rows(report)
    if steps:
        left += "<h3>Test plan</h3>" + _table(
            ["Step", "Action", "Users", "Started", "Duration"],
            ["<tr>" + "".join(f"<td class=text>{_e(c)}</td>" for c in row[:4]) + f"<td>{_e(row[4])}</td></tr>"
             for row in steps],
            text_cols=4,
        )  # fmt: skip
    events = list(report.get("events") or [])
    if events:
        left += "<h3>Control events</h3>" + _table(
            ["Time", "Command", "Value", "By"],
            [f"<tr><td>{_e(fmt_seconds(float(ev.get('t') or 0.0)))}</td><td class=text>{_e(ev.get('command', ''))}"
             f"</td><td class=text>{_e(ev.get('value') if ev.get('value') is not None else '-')}</td>"
             f"<td class=text>{_e(ev.get('by', ''))}</td></tr>" for ev in events],
            text_cols=4,
        )  # fmt: skip
    phases = list(report.get("phases") or [])
    right = "<h3 style='margin-top:0'>Phases</h3>"
    if phases:
        right += _table(
            ["Phase", "Started", "Duration"],
            [
                f"<tr><td>{_e(p.get('name', ''))}</td><td class=text>{_e(fmt_timestamp(p.get('started_at')))}"
                f"</td><td>{_e(fmt_seconds(p.get('duration_s')))}</td></tr>"
                for p in phases
            ],
            text_cols=2,
        )
    else:
        right += '<p class="empty">No phases recorded.</p>'

    workers = list(report.get("workers") or [])
    if workers:
        body = []
        for w in workers:
            req, fails = int(w.get("requests", 0)), int(w.get("failures", 0))
            body.append(
                f"<tr><td>{_e(w.get('index', ''))}</td><td class=text>{_e(w.get('id', ''))}</td>"
                f"<td class=text>{_e(w.get('host', ''))}</td><td>{fmt_int(w.get('users', 0))}</td>"
                f"<td>{fmt_int(req)}</td><td{' class=bad' if fails else ''}>"
                f"{_e(fmt_fails(fails, fail_pct(fails, req)))}</td></tr>"
            )
        right += "<h3>Workers</h3>" + _table(["#", "Worker", "Host", "Users", "# reqs", "# fails"], body, text_cols=3)
    return f'<div class="grid2"><div>{left}</div><div>{right}</div></div>'


def _cards(report: Mapping[str, Any]) -> str:
    agg: Row = report.get("aggregated") or {}
    fails = int(agg.get("fail_count", 0))
    p95 = percentile(agg, "95")
    cards: list[tuple[str, str, str, bool]] = [
        ("Requests", fmt_int(agg.get("count", 0)), "", False),
        ("Throughput", fmt_rate(agg.get("rps")), "req/s", False),
        ("Failures", fmt_int(fails), f"({fail_pct_text(agg)})", fails > 0),
        ("p95 response", fmt_ms(p95), "ms" if p95 is not None else "", False),
        ("Users", fmt_int(report.get("users")), "", False),
        ("Duration", fmt_seconds(report.get("duration_s")).split(" (")[0], "", False),
    ]
    return (
        '<section class="cards">'
        + "".join(
            f'<div class="card{" bad" if bad else ""}"><div class="k">{_e(k)}</div>'
            f'<div class="v">{_e(v)}{f"<small>{_e(unit)}</small>" if unit else ""}</div></div>'
            for k, v, unit, bad in cards
        )
        + "</section>"
    )


def fail_pct_text(row: Row) -> str:
    return fmt_fails(int(row.get("fail_count", 0)), row.get("fail_pct")).split(" (", 1)[1].rstrip(")")


def render_html(report: Mapping[str, Any]) -> str:
    """The whole report as one HTML document that opens offline."""
    host = str(report.get("host") or "")
    started = fmt_timestamp(report.get("started_at"))
    workers = list(report.get("workers") or [])
    mode = str(report.get("mode", ""))
    if workers:
        mode += f", {len(workers)} worker{'s' if len(workers) != 1 else ''}"
    facts = (host, started, fmt_seconds(report.get("duration_s")), mode)
    sub = "".join(f"<span>{_e(s)}</span>" for s in facts if s)
    charts = "".join(f'<figure class="panel" style="margin:0">{render_chart(c)}</figure>' for c in build_charts(report))
    sections: list[tuple[str, str, Callable[[Mapping[str, Any]], str]]] = [
        ("overview", "Overview", _overview_section),
        ("requests", "Per request metrics", _requests_section),
        ("transactions", "Per transaction metrics", _transactions_section),
        ("scenarios", "Per scenario metrics", _scenarios_section),
        ("exceptions", "Exceptions", _exceptions_section),
        ("errors", "Errors", _errors_section),
    ]
    body = "".join(f'<section id="{sid}"><h2>{_e(title)}</h2>{fn(report)}</section>' for sid, title, fn in sections)
    version = _e(report.get("version", ""))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>goose-redis report: {_e(host)} {_e(started)}</title>"
        f"<style>{CSS}{VERDICT_CSS}</style></head><body>"
        '<header class="top"><div class="wrap"><h1>goose-redis load test report</h1>'
        f'<p class="sub">{sub}</p></div></header>'
        f'<main class="wrap">{_verdict_section(report)}'
        f'{_cards(report)}<section class="charts" id="charts">{charts}</section>'
        f"{body}</main>"
        f'<footer><div class="wrap">Generated by goose-redis {version}, report schema '
        f"{_e(report.get('schema', ''))}.</div></footer>"
        "</body></html>\n"
    )


# ---------------------------------------------------------------- verdict (docs/verdict.md)

VERDICT_CSS = """
.verdict{margin-top:20px;border-radius:10px;padding:12px 16px;border:1px solid}
.verdict.pass{background:#f0fdf4;border-color:#86efac;color:#14532d}
.verdict.fail{background:#fef2f2;border-color:#fca5a5;color:#7f1d1d}
.verdict h2{margin:0 0 6px;font-size:17px}.verdict ul{margin:4px 0 8px;padding-left:20px}
.verdict .scroll{margin-top:8px}
.incomplete{margin-top:20px;background:#b91c1c;color:#fff;border-radius:10px;padding:12px 16px;font-weight:600}
tr.pass td.result{color:#15803d;font-weight:700}tr.fail td.result{color:#b91c1c;font-weight:700}
tr.fail td{background:#fff5f5}
"""


def _verdict_section(report: Mapping[str, Any]) -> str:
    """At the top of the page: a red banner when the totals are incomplete, then the verdict
    (green when passed, red when not) with every threshold. Nothing without either."""
    results: list[Row] = list(report.get("thresholds") or [])
    verdict: Row = report.get("verdict") or {}
    problems = integrity_problems(report)
    out = ""
    if problems is not None:
        items = "".join(f"<li>{_e(p)}</li>" for p in problems)
        out += '<section class="incomplete" id="integrity">INCOMPLETE: the totals are known to be short.'
        out += f"<ul>{items}</ul></section>"
    if not results and not verdict.get("aborted") and problems is None:
        return out
    passed = bool(verdict.get("passed"))
    head = f"{'Passed' if passed else 'Failed'} (exit code {_e(verdict.get('exit_code', ''))})"
    reasons = "".join(f"<li>{_e(r)}</li>" for r in verdict.get("reasons") or [])
    body = [
        f'<tr class="{"pass" if r.get("passed") else "fail"}"><td>{_e(r.get("expr", ""))}</td>'
        f"<td>{_e(measured_text(r))}</td><td class=result>{'pass' if r.get('passed') else 'FAIL'}</td></tr>"
        for r in results
    ]
    table = _table(["Threshold", "Measured", "Result"], body) if results else ""
    cls = "pass" if passed else "fail"
    return out + (
        f'<section class="verdict {cls}" id="verdict"><h2>Verdict: {head}</h2>'
        f"{f'<ul>{reasons}</ul>' if reasons else ''}{table}</section>"
    )
