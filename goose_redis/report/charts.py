"""Report dict -> the HTML report's charts (``svg.Chart``): what each shows, its shading and markers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from goose_redis.report.fmt import parse_iso, percentile, request_label
from goose_redis.report.svg import Band, Chart, Marker, Series

Row = Mapping[str, Any]

BLUE, RED, GREEN, AMBER = "#2563eb", "#dc2626", "#16a34a", "#d97706"
# Five hues far apart (blue, orange, green, magenta, maroon), so the top-5 lines stay apart.
ROW_COLORS = ("#1d4ed8", "#ea580c", "#15803d", "#c026d3", "#7f1d1d")
TOP_ROWS = 5
# A request ranks among the slowest only with at least this share of all requests (and 5 of them).
TOP_MIN_SHARE = 0.01


def _epoch(text: object) -> float | None:
    dt = parse_iso(str(text)) if text else None
    return None if dt is None else dt.timestamp()


def _phase_bands(report: Mapping[str, Any], origin: float) -> list[Band]:
    bands = []
    for phase in report.get("phases") or []:
        start = _epoch(phase.get("started_at"))
        if start is None:
            continue
        start -= origin
        name = str(phase.get("name", ""))
        css = f"band-{name}" if name in ("ramp-up", "steady", "stop") else "band-other"
        bands.append(Band(name, start, start + float(phase.get("duration_s") or 0.0), css))
    return bands


def _plan_bands(report: Mapping[str, Any], origin: float) -> list[Band]:
    """The test plan's steps, shaded like the phases: increase, maintain, decrease."""
    run_start = _epoch(report.get("started_at"))
    bands = []
    for step in report.get("plan") or []:
        start = _epoch(step.get("started_at"))
        if start is None and run_start is not None:
            start = run_start + float(step.get("t") or 0.0)
        if start is None:
            continue
        action, frm, to = str(step.get("action", "")), step.get("from"), step.get("to")
        label = f"hold {to}" if action == "maintain" else f"{frm} \u2192 {to}"
        css = f"band-{action}" if action in ("increase", "maintain", "decrease") else "band-other"
        bands.append(Band(label, start - origin, start - origin + float(step.get("duration_s") or 0.0), css))
    return bands


def _event_markers(report: Mapping[str, Any], origin: float) -> list[Marker]:
    run_start = _epoch(report.get("started_at"))
    markers = []
    for event in report.get("events") or []:
        at = _epoch(event.get("at"))
        if at is None and run_start is not None:
            at = run_start + float(event.get("t") or 0.0)
        if at is None:
            continue
        value = event.get("value")
        text = f"{event.get('command', '')}{f' {value}' if value not in (None, '') else ''}"
        by = event.get("by")
        markers.append(Marker(at - origin, f"{text} (by {by})" if by else text))
    return markers


def slowest_rows(report: Mapping[str, Any], limit: int = TOP_ROWS) -> list[str]:
    """Series row keys (``"METHOD name"``) of the slowest requests by p95, among those with a
    meaningful share of the traffic (a static asset fetched 10,000 times is rarely the story)."""
    rows = [r for r in report.get("requests") or [] if percentile(r, "95") is not None]
    total = sum(int(r.get("count", 0)) for r in rows)
    floor = max(5, total * TOP_MIN_SHARE)
    ranked = sorted(
        (r for r in rows if int(r.get("count", 0)) >= floor),
        key=lambda r: (-(percentile(r, "95") or 0.0), request_label(r)),
    )
    return [f"{r.get('method', '')} {r.get('name', '')}" for r in ranked[:limit]]


def build_charts(report: Mapping[str, Any]) -> list[Chart]:
    """The four charts of the page, from ``report["series"]``."""
    series = report.get("series") or {}
    points: list[Row] = list(series.get("points") or [])
    interval = float(series.get("interval_s") or 1)
    origin = float(series.get("started_at") or 0.0)
    # Each bucket is plotted at its end: that is when its counts are complete.
    xs = [float(p.get("t", 0.0)) + interval for p in points]
    x_max = max(xs, default=0.0)
    bands: list[Band] = []
    markers: list[Marker] = []
    if points:
        # A plain ramp-up-and-hold reads best as Goose's phases; a plan or a steered run as its steps.
        steered = report.get("test_plan") or report.get("events")
        bands = (_plan_bands(report, origin) if steered else []) or _phase_bands(report, origin)
        markers = _event_markers(report, origin)

    def line(key: str) -> list[tuple[float, float | None]]:
        return [(x, None if p.get(key) is None else float(p[key])) for x, p in zip(xs, points, strict=True)]

    top = slowest_rows(report)
    title = f"Requests per second of the {TOP_ROWS} slowest requests (by p95)"
    if not top:  # an old report or no timings: the busiest instead
        totals: dict[str, int] = {}
        for p in points:
            for name, pair in (p.get("rows") or {}).items():
                totals[name] = totals.get(name, 0) + int(pair[0])
        top = sorted(totals, key=lambda n: (-totals[n], n))[:TOP_ROWS]
        title = f"Requests per second of the {TOP_ROWS} busiest requests"
    row_series = [
        Series(
            name,
            ROW_COLORS[i % len(ROW_COLORS)],
            [
                (x, float((p.get("rows") or {}).get(name, (0, 0))[0]) / interval)
                for x, p in zip(xs, points, strict=True)
            ],
        )
        for i, name in enumerate(top)
    ]
    x_min = min(0.0, min(xs, default=0.0) - interval)

    def chart(key: str, name: str, unit: str, lines: list[Series], hover_unit: str = "") -> Chart:
        return Chart(key, name, unit, lines, x_max, x_min, bands, markers, hover_unit)

    return [
        chart("users", "Active users", "users", [Series("users", BLUE, line("users"), area=True)]),
        chart("throughput", "Requests per second", "per second",
              [Series("requests/s", BLUE, line("rps")), Series("failures/s", RED, line("fail_ps"))]),
        chart("latency", "Response time percentiles", "ms",
              [Series("p50", GREEN, line("p50_ms")), Series("p95", AMBER, line("p95_ms")),
               Series("p99", RED, line("p99_ms"), dash="5 3")], " ms"),
        chart("rows", title, "per second", row_series, "/s"),
    ]  # fmt: skip
