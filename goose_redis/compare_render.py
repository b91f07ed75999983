"""A ``Comparison`` as text (a terminal), Markdown (a pull request comment) or JSON (a machine)."""

from __future__ import annotations

from typing import Any

import orjson

from .compare import LATENCIES, Change, Comparison, RowChange
from .report.markdown import md_cell

FORMATS = ("text", "md", "json")
HEADERS = ["Row", "Count", "req/s", "Fail %", *[f"p{k} (ms)" for k in LATENCIES], "Result"]


def rule_text(c: Comparison) -> str:
    r = c.rule
    return (
        f"a row with at least {r.min_count} requests (or runs) on both sides regresses when its p95 or p99 "
        f"grows by more than {r.max_regression_pct:g} % and by more than {r.floor_ms:g} ms, "
        f"or its fail % grows by more than {r.max_fail_increase_pp:g} percentage points; "
        "scenario rows are shown but not judged"
    )


def _num(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:,.0f}"


def _fmt(v: float | None, kind: str) -> str:
    return _ms(v) if kind == "ms" else _num(v, 0 if kind == "count" else 2)


def _plus(text: str) -> str:
    return text if text.startswith("-") else f"+{text}"


def change_cell(c: Change, kind: str) -> str:
    """``20.1 → 60.3 (+40.2, +200%)``: both sides, the absolute and the relative change.

    ``kind``: "ms", "count", "rate", or "pp" (a percentage: its change is in points, not relative).
    """
    if c.base is None and c.new is None:
        return "-"
    text = f"{_fmt(c.base, kind)} → {_fmt(c.new, kind)}"
    d = c.delta
    if not d:
        return text
    parts = [_plus(_fmt(d, kind)) + (" pp" if kind == "pp" else "")]
    rel = c.rel_pct
    if rel is not None and kind != "pp":
        parts.append(_plus(f"{rel:.0f}%" if abs(rel) >= 10 else f"{rel:.1f}%"))
    return f"{text} ({', '.join(parts)})"


def _result(r: RowChange) -> str:
    if r.regressions:
        return "REGRESSED: " + ", ".join(r.regressions)
    return "ok" if r.judged else "not judged"


def _cells(r: RowChange) -> list[str]:
    return [
        change_cell(r.count, "count"),
        change_cell(r.rps, "rate"),
        change_cell(r.fail_pct, "pp"),
        *[change_cell(r.latency[k], "ms") for k in LATENCIES],
        _result(r),
    ]


def summary_line(c: Comparison) -> str:
    n = len(c.regressed)
    if not n:
        return f"no regression in {sum(1 for r in c.rows if r.judged)} judged rows"
    return f"{n} row{'s' if n != 1 else ''} regressed"


def render_text(c: Comparison, base_name: str, new_name: str) -> str:
    lines = [f"Comparing {base_name} (base) with {new_name} (new)", f"Rule: {rule_text(c)}.", ""]
    table = [HEADERS] + [[f"{r.kind}: {r.label}" if r.kind != "aggregated" else r.label, *_cells(r)] for r in c.rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADERS))]
    rule = " " + "-+-".join("-" * w for w in widths)
    for i, row in enumerate(table):
        cells = [row[0].ljust(widths[0]), *[cell.rjust(w) for cell, w in zip(row[1:-1], widths[1:-1], strict=True)]]
        cells.append(row[-1].ljust(widths[-1]))
        lines.append((" " + " | ".join(cells)).rstrip())
        if i == 0:
            lines.append(rule)
    for title, rows in (("Only in base", c.only_base), ("Only in new", c.only_new)):
        if rows:
            lines += ["", f"{title}:"] + [f"  {kind}: {label}" for kind, label in rows]
    if c.notes:
        lines += ["", "Notes:"] + [f"  {n}" for n in c.notes]
    verdict = "FAILED" if c.regressed else "passed"
    lines += ["", f"Verdict: {verdict}, {summary_line(c)} (exit code {c.exit_code})."]
    return "\n".join(lines) + "\n"


def render_markdown(c: Comparison, base_name: str, new_name: str) -> str:
    """For a pull request comment or a CI job summary."""
    head = "Regression" if c.regressed else "No regression"
    out = [
        f"## Load test comparison: {head}",
        "",
        f"**{md_cell(summary_line(c))}**: {md_cell(new_name)} (new) against {md_cell(base_name)} (base).",
        "",
    ]
    out += ["| " + " | ".join(HEADERS) + " |", "| :--- | " + " | ".join("---:" for _ in HEADERS[1:-1]) + " | :--- |"]
    for r in c.rows:
        label = md_cell(r.label if r.kind == "aggregated" else f"{r.kind}: {r.label}")
        cells = [md_cell(x) for x in _cells(r)]
        if r.regressions:
            cells[-1] = f"**{cells[-1]}**"
        if r.kind == "aggregated":
            label = f"**{label}**"
        out.append("| " + " | ".join([label, *cells]) + " |")
    out.append("")
    for title, rows in (("Only in base", c.only_base), ("Only in new", c.only_new)):
        if rows:
            out += [f"**{title}:** " + ", ".join(md_cell(f"{kind}: {label}") for kind, label in rows), ""]
    out += [f"> {md_cell(n)}" for n in c.notes]
    out += [""] if c.notes else []
    out += [f"<sub>Rule: {md_cell(rule_text(c))}. Exit code {c.exit_code}.</sub>", ""]
    return "\n".join(out)


def _change(c: Change) -> dict[str, Any]:
    return {"base": c.base, "new": c.new, "delta": c.delta, "rel_pct": c.rel_pct}


def render_json(c: Comparison, base_name: str, new_name: str) -> str:
    rule = c.rule
    doc = {
        "base": base_name,
        "new": new_name,
        "rule": {
            "max_regression_pct": rule.max_regression_pct,
            "max_fail_increase_pp": rule.max_fail_increase_pp,
            "floor_ms": rule.floor_ms,
            "min_count": rule.min_count,
        },
        "passed": not c.regressed,
        "exit_code": c.exit_code,
        "rows": [
            {
                "kind": r.kind,
                "key": list(r.key),
                "label": r.label,
                "count": _change(r.count),
                "rps": _change(r.rps),
                "fail_pct": _change(r.fail_pct),
                "percentiles_ms": {k: _change(v) for k, v in r.latency.items()},
                "judged": r.judged,
                "regressions": r.regressions,
            }
            for r in c.rows
        ],
        "only_base": [{"kind": k, "label": label} for k, label in c.only_base],
        "only_new": [{"kind": k, "label": label} for k, label in c.only_new],
        "notes": c.notes,
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE).decode()


RENDERERS = {"text": render_text, "md": render_markdown, "json": render_json}
