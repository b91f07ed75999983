"""Number, time and label formatting shared by every text renderer.

One place so the console, Markdown, HTML and the progress line print the same
value the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# Percentile keys of ``percentiles_ms``, in display order, with their column labels.
PERCENTILES: tuple[tuple[str, str], ...] = (
    ("50", "50%"),
    ("75", "75%"),
    ("90", "90%"),
    ("95", "95%"),
    ("99", "99%"),
    ("99.9", "99.9%"),
)


def fmt_int(n: int | float | None) -> str:
    if n is None:
        return "-"
    return f"{int(n):,}"


def fmt_rate(x: float | None) -> str:
    """Per-second rates: two decimals, like Goose."""
    if x is None:
        return "-"
    return f"{x:,.2f}"


def fmt_ms(v: float | None) -> str:
    """Milliseconds with about three significant digits.

    Two decimals below 10 ms, one below 100 ms, whole numbers above.
    """
    if v is None:
        return "-"
    if v < 10:
        return f"{v:.2f}"
    if v < 100:
        return f"{v:.1f}"
    return f"{v:,.0f}"


def fmt_pct(p: float | None) -> str:
    if p is None:
        return "-"
    if p == 0:
        return "0%"
    if p >= 100:
        return "100%"
    # Small failure rates matter: keep two decimals below 1 %.
    if p < 1:
        return f"{p:.2f}%"
    return f"{p:.1f}%"


def fmt_fails(count: int, pct: float | None) -> str:
    return f"{fmt_int(count)} ({fmt_pct(pct)})"


def fail_pct(failures: int, total: int) -> float:
    return failures * 100.0 / total if total else 0.0


def fmt_clock(seconds: float | None) -> str:
    """``MM:SS``, or ``H:MM:SS`` from one hour on."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}:{m:02d}:{sec:02d}"
    return f"{m:02d}:{sec:02d}"


def fmt_seconds(seconds: float | None) -> str:
    """A duration for humans: ``30.2 s`` or ``30.2 s (02:05)`` past a minute."""
    if seconds is None:
        return "-"
    text = f"{seconds:,.1f} s"
    if seconds >= 60:
        text += f" ({fmt_clock(seconds)})"
    return text


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def fmt_timestamp(text: str | None) -> str:
    """ISO 8601 -> ``2026-11-23 15:00:00 UTC``; unparsable text is shown as is."""
    dt = parse_iso(text)
    if dt is None:
        return text or "-"
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_time_of_day(text: str | None) -> str:
    dt = parse_iso(text)
    if dt is None:
        return text or "-"
    return dt.strftime("%H:%M:%S")


def status_code_items(codes: Mapping[str, int] | None) -> list[tuple[str, int]]:
    """Status codes sorted numerically (``"0"`` = no response comes first)."""

    def key(item: tuple[str, int]) -> tuple[int, str]:
        code = item[0]
        return (int(code), code) if code.isdigit() else (10**6, code)

    return sorted((codes or {}).items(), key=key)


def fmt_status_codes(codes: Mapping[str, int] | None) -> str:
    items = status_code_items(codes)
    if not items:
        return "-"
    return ", ".join(f"{code} [{count:,}]" for code, count in items)


def request_label(row: Mapping[str, Any]) -> str:
    """``GET /path``; the aggregated row (method ``""``) is just its name."""
    method = str(row.get("method") or "")
    name = str(row.get("name", ""))
    return f"{method} {name}" if method else name


def percentile(row: Mapping[str, Any], key: str) -> float | None:
    value = (row.get("percentiles_ms") or {}).get(key)
    return None if value is None else float(value)


def grouped_transactions(
    report: Mapping[str, Any],
) -> list[tuple[int, str, list[tuple[int, Mapping[str, Any]]]]]:
    """Transactions grouped under their scenario, Goose-style.

    Returns ``[(scenario_number, scenario_name, [(transaction_number, row)])]``,
    numbers 1-based from the 0-based ``scenario_index`` / ``transaction_index``.
    Scenarios without transaction rows are left out.
    """
    groups: dict[tuple[int, str], list[tuple[int, Mapping[str, Any]]]] = {}
    for pos, row in enumerate(report.get("transactions") or []):
        s_idx = int(row.get("scenario_index", 0))
        t_idx = int(row.get("transaction_index", pos))
        groups.setdefault((s_idx, str(row.get("scenario", ""))), []).append((t_idx + 1, row))
    out = []
    for (s_idx, s_name), rows in sorted(groups.items(), key=lambda kv: kv[0]):
        out.append((s_idx + 1, s_name, sorted(rows, key=lambda r: r[0])))
    return out


def truncate(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    return text[: max(0, width - 3)] + "..."


def fmt_bytes(n: float | None) -> str:
    """A response size: ``512 B``, ``1.5 kB``, ``2.3 MB`` (powers of 1000, as HTTP tools print them)."""
    if n is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} B"


def exceptions(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Exceptions raised by transactions, most frequent first: ``[{scenario, transaction, error, count}]``.

    Only an exception gives a transaction row an error text (a transaction failed by its
    requests has none), so these are the rows' ``errors``.
    """
    found = [
        (int(n), str(row.get("scenario", "")), str(row.get("name", "")), str(text))
        for row in report.get("transactions") or []
        for text, n in (row.get("errors") or {}).items()
    ]
    found.sort(key=lambda e: (-e[0], e[1], e[2], e[3]))
    return [{"scenario": sc, "transaction": tx, "error": text, "count": n} for n, sc, tx, text in found]


def run_span_s(report: Mapping[str, Any]) -> float | None:
    """Seconds from ``started_at`` to ``ended_at``."""
    start, end = parse_iso(report.get("started_at")), parse_iso(report.get("ended_at"))
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def duration_text(report: Mapping[str, Any], running: bool = False) -> str:
    """``duration_s``, saying what it measures when that is not simply Ended minus Started:
    after a metrics reset the rates divide by the time since the reset."""
    text = fmt_seconds(report.get("duration_s"))
    span = run_span_s(report)
    whole = "the run so far" if running else "the whole run"
    if report.get("metrics_reset"):
        rest = f"; {whole}: {fmt_seconds(span)}" if span is not None else ""
        return f"{text} (measured from the metrics reset{rest})"
    if span is not None and report.get("duration_s") is not None and abs(span - float(report["duration_s"])) >= 0.05:
        return f"{text} (measured; {whole}: {fmt_seconds(span)})"
    return text


def plan_rows(report: Mapping[str, Any]) -> list[list[str]]:
    """The test plan's steps as text cells: step, action, users, started, duration."""
    rows = []
    for step in report.get("plan") or []:
        rows.append([
            str(step.get("step", "")),
            str(step.get("action", "")),
            f"{fmt_int(step.get('from'))} -> {fmt_int(step.get('to'))}",
            fmt_timestamp(step.get("started_at")),
            fmt_seconds(step.get("duration_s")),
        ])  # fmt: skip
    return rows


def co_rows(report: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """(request row, its ``co`` figures) for rows corrected for coordinated omission, Aggregated last."""
    rows = [*(report.get("requests") or []), *([report["aggregated"]] if report.get("aggregated") else [])]
    return [(r, r["co"]) for r in rows if isinstance(r.get("co"), Mapping)]


# The corrected figures shown beside the raw ones: (label, raw getter key, co getter key).
CO_COLUMNS: tuple[tuple[str, str], ...] = (("Avg", "mean"), ("50%", "50"), ("95%", "95"), ("99%", "99"), ("Max", "max"))


def co_pair(row: Mapping[str, Any], co: Mapping[str, Any], key: str) -> str:
    """``raw / corrected`` milliseconds for one ``CO_COLUMNS`` key."""
    if key == "mean":
        raw, fixed = row.get("mean_ms"), co.get("mean_ms")
    elif key == "max":
        raw, fixed = row.get("max_ms"), co.get("max_ms")
    else:
        raw, fixed = percentile(row, key), (co.get("percentiles_ms") or {}).get(key)
    return f"{fmt_ms(raw)} / {fmt_ms(None if fixed is None else float(fixed))}"
