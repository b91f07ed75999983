"""Inline SVG line charts, drawn in Python so the HTML report needs no script or download.

Values show on hover through SVG ``<title>`` elements (the browser's own tooltip): one
transparent column per plotted time holds every series' value at that time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape

from goose_redis.report.fmt import fmt_clock

WIDTH = 640
HEIGHT = 280
MARGIN_LEFT = 58
MARGIN_RIGHT = 18
MARGIN_BOTTOM = 34
TITLE_Y = 20
LEGEND_ROW = 17
CHAR_W = 6.4  # rough width of one 11px character, for laying out the legend
MAX_HOVER = 300  # hover columns per chart at most: long runs show every n-th point


@dataclass
class Series:
    label: str
    color: str
    points: list[tuple[float, float | None]]  # (x seconds, y); None breaks the line
    area: bool = False  # shade the area under the line
    dash: str | None = None


@dataclass
class Band:
    label: str
    start: float
    end: float
    css_class: str  # colour comes from the page stylesheet


@dataclass
class Marker:
    """A moment worth a vertical line (a control command applied during the run)."""

    x: float
    label: str


@dataclass
class Chart:
    key: str  # data-chart attribute, stable for tests and styling
    title: str
    unit: str
    series: list[Series]
    x_max: float
    x_min: float = 0.0  # below 0 when buckets start before the series origin
    bands: list[Band] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    hover_unit: str = ""  # after each value in the hover titles: " ms", "/s"


def nice_step(span: float, target_ticks: int = 5) -> float:
    """A 1/2/5 x 10^n step giving about ``target_ticks`` ticks over ``span``: every tick a round number."""
    if span <= 0:
        return 1.0
    raw = span / target_ticks
    mag = 10 ** math.floor(math.log10(raw))
    for f in (1, 2, 5, 10):
        if raw <= f * mag * (1 + 1e-9):
            return f * mag
    return 10 * mag


_TIME_STEPS = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def time_step(span: float, max_ticks: int = 8) -> float:
    """A step in seconds on round clock values (5 s, 30 s, 5 min, ...)."""
    for step in _TIME_STEPS:
        if span / step <= max_ticks:
            return float(step)
    return float(math.ceil(span / max_ticks / 86400) * 86400)


def fmt_tick(v: float, step: float, thousands: bool = False) -> str:
    """A y tick label with just the decimals ``step`` needs; ``thousands`` (chosen once per axis) writes k."""
    if thousands and v:
        k = v / 1000
        return f"{k:,.0f}k" if abs(k - round(k)) < 1e-9 else f"{k:,.1f}k"
    if step >= 1 or v == 0:
        return f"{v:,.0f}"
    decimals = min(6, max(1, -math.floor(math.log10(step) + 1e-9)))
    return f"{v:.{decimals}f}"


def fmt_value(v: float | None) -> str:
    """A value in a hover title: about three significant digits."""
    if v is None:
        return "-"
    if v == 0 or abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if abs(v) >= 0.01 else f"{v:.2g}"


def _f(v: float) -> str:
    return f"{v:.1f}"


def _legend(chart: Chart) -> tuple[list[str], int]:
    """Legend items laid out left to right, wrapping; returns (svg parts, rows used)."""
    parts: list[str] = []
    x, row = float(MARGIN_LEFT), 0
    for s in chart.series:
        item_w = 22 + len(s.label) * CHAR_W + 14
        if x + item_w > WIDTH - MARGIN_RIGHT and x > MARGIN_LEFT:
            x, row = float(MARGIN_LEFT), row + 1
        y = TITLE_Y + 18 + row * LEGEND_ROW
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        parts.append(
            f'<g class="legend-item"><line x1="{_f(x)}" y1="{y - 4}" x2="{_f(x + 16)}" y2="{y - 4}" '
            f'stroke="{s.color}" stroke-width="3" stroke-linecap="round"{dash}/>'
            f'<text x="{_f(x + 22)}" y="{y}">{escape(s.label)}</text></g>'
        )
        x += item_w
    return parts, row + 1


def render_chart(chart: Chart) -> str:
    """One ``<svg class="chart">``; an empty chart says "no data" instead of drawing axes."""
    span = chart.x_max - chart.x_min
    has_data = span > 0 and any(y is not None for s in chart.series for _, y in s.points)
    legend, legend_rows = _legend(chart) if has_data else ([], 0)
    # Phase names get a strip of their own above the plot, clear of the lines.
    top = TITLE_Y + 14 + legend_rows * LEGEND_ROW + (12 if chart.bands and has_data else 0)
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - top - MARGIN_BOTTOM
    label = escape(chart.title)
    out = [
        f'<svg class="chart" data-chart="{escape(chart.key)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{label}" preserveAspectRatio="xMidYMid meet">',
        f'<text class="chart-title" x="{MARGIN_LEFT}" y="{TITLE_Y}">{label}</text>',
    ]
    if not has_data:
        out.append(f'<rect class="plot-bg" x="{MARGIN_LEFT}" y="{top}" width="{plot_w}" height="{plot_h}"/>')
        out.append(
            f'<text class="no-data" x="{MARGIN_LEFT + plot_w / 2}" y="{top + plot_h / 2}" '
            f'text-anchor="middle">no data</text></svg>'
        )
        return "".join(out)

    y_peak = max((y for s in chart.series for _, y in s.points if y is not None), default=0.0)
    y_step = nice_step(y_peak if y_peak > 0 else 1.0)
    y_max = max(y_step, math.ceil(y_peak / y_step - 1e-9) * y_step)

    def px(x: float) -> float:
        return MARGIN_LEFT + (min(max(x, chart.x_min), chart.x_max) - chart.x_min) / span * plot_w

    def py(y: float) -> float:
        return top + plot_h - y / y_max * plot_h

    out.append(f'<rect class="plot-bg" x="{MARGIN_LEFT}" y="{top}" width="{plot_w}" height="{plot_h}"/>')
    for band in chart.bands:
        x0, x1 = px(band.start), px(band.end)
        if x1 - x0 < 0.5:
            continue
        out.append(
            f'<rect class="band {escape(band.css_class)}" x="{_f(x0)}" y="{top}" '
            f'width="{_f(x1 - x0)}" height="{plot_h}"><title>{escape(band.label)}</title></rect>'
        )
        if x1 - x0 > 36:
            out.append(
                f'<text class="band-label" x="{_f((x0 + x1) / 2)}" y="{top - 3}" '
                f'text-anchor="middle">{escape(band.label)}</text>'
            )

    right, bottom = WIDTH - MARGIN_RIGHT, top + plot_h
    # Horizontal grid and y tick labels.
    ticks = int(round(y_max / y_step))
    for i in range(ticks + 1):
        v = i * y_step
        y = py(v)
        out.append(f'<line class="grid" x1="{MARGIN_LEFT}" y1="{_f(y)}" x2="{right}" y2="{_f(y)}"/>')
        out.append(
            f'<text class="tick" x="{MARGIN_LEFT - 6}" y="{_f(y + 4)}" text-anchor="end">'
            f"{fmt_tick(v, y_step, y_max >= 10_000)}</text>"
        )
    # X ticks on round clock values.
    x_step = time_step(span)
    for i in range(math.ceil(chart.x_min / x_step - 1e-9), int(chart.x_max // x_step) + 1):
        x = px(i * x_step)
        out.append(f'<line class="axis" x1="{_f(x)}" y1="{bottom}" x2="{_f(x)}" y2="{bottom + 4}"/>')
        out.append(
            f'<text class="tick" x="{_f(x)}" y="{top + plot_h + 16}" text-anchor="middle">'
            f"{'-' if i < 0 else ''}{fmt_clock(abs(i * x_step))}</text>"
        )
    out.append(
        f'<line class="axis" x1="{MARGIN_LEFT}" y1="{top + plot_h}" x2="{WIDTH - MARGIN_RIGHT}" y2="{top + plot_h}"/>'
    )
    out.append(
        f'<text class="axis-title" x="{WIDTH - MARGIN_RIGHT}" y="{HEIGHT - 4}" text-anchor="end">elapsed (mm:ss)</text>'
    )
    out.append(
        f'<text class="axis-title" transform="translate(14 {_f(top + plot_h / 2)}) rotate(-90)" '
        f'text-anchor="middle">{escape(chart.unit)}</text>'
    )

    for s in chart.series:
        segments: list[list[tuple[float, float]]] = [[]]
        for x, value in s.points:
            if value is None:
                if segments[-1]:
                    segments.append([])
                continue
            segments[-1].append((px(x), py(value)))
        segments = [seg for seg in segments if seg]
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        for seg in segments:
            if s.area and len(seg) > 1:
                base = _f(top + plot_h)
                d = f"M{_f(seg[0][0])},{base}" + "".join(f"L{_f(a)},{_f(b)}" for a, b in seg)
                d += f"L{_f(seg[-1][0])},{base}Z"
                out.append(f'<path class="area" d="{d}" fill="{s.color}"/>')
            if len(seg) == 1:
                out.append(f'<circle cx="{_f(seg[0][0])}" cy="{_f(seg[0][1])}" r="2.5" fill="{s.color}"/>')
                continue
            d = "M" + "L".join(f"{_f(a)},{_f(b)}" for a, b in seg)
            out.append(f'<path class="line" d="{d}" stroke="{s.color}"{dash}><title>{escape(s.label)}</title></path>')
    for m in chart.markers:
        if chart.x_min <= m.x <= chart.x_max:
            mx = _f(px(m.x))
            out.append(
                f'<g class="marker"><line x1="{mx}" y1="{top}" x2="{mx}" y2="{bottom}"/>'
                f'<title>{escape(fmt_clock(m.x))} {escape(m.label)}</title></g>'
            )
    out += _hover_columns(chart, px, top, plot_h)
    out += legend
    out.append("</svg>")
    return "".join(out)


def _hover_columns(chart: Chart, px: Callable[[float], float], top: float, plot_h: float) -> list[str]:
    """One transparent column per shown time whose ``<title>`` lists every series there."""
    xs = sorted({x for s in chart.series for x, _ in s.points if chart.x_min <= x <= chart.x_max})
    if not xs:
        return []
    shown = xs[:: max(1, math.ceil(len(xs) / MAX_HOVER))]
    pos = [px(x) for x in shown]
    edges = [(a + b) / 2 for a, b in zip(pos, pos[1:], strict=False)]
    half = (pos[1] - pos[0]) / 2 if len(pos) > 1 else 4.0
    lefts = [max(MARGIN_LEFT, pos[0] - half), *edges]
    rights = [*edges, min(WIDTH - MARGIN_RIGHT, pos[-1] + half)]
    values = [dict(s.points) for s in chart.series]
    # Each control event is told in the column nearest to it (its line is too thin to hover).
    events: dict[int, list[str]] = {}
    for m in chart.markers:
        if chart.x_min <= m.x <= chart.x_max:
            nearest = min(range(len(pos)), key=lambda i: abs(pos[i] - px(m.x)))
            events.setdefault(nearest, []).append(f"event at {fmt_clock(m.x)}: {m.label}")
    out = ['<g class="hover">']
    for i, (x, left, right) in enumerate(zip(shown, lefts, rights, strict=True)):
        # The bucket plotted at x ended at x: name the phase or plan step it fell in.
        band = next((b.label for b in chart.bands if b.start < x <= b.end), "")
        lines = [f"{fmt_clock(x)}{f' ({band})' if band else ''}"] + [
            f"{s.label}: {fmt_value(v.get(x))}{chart.hover_unit}" for s, v in zip(chart.series, values, strict=True)
        ] + events.get(i, [])
        out.append(
            f'<rect x="{_f(left)}" y="{_f(top)}" width="{_f(max(right - left, 0.5))}" height="{_f(plot_h)}">'
            f"<title>{escape(chr(10).join(lines))}</title></rect>"
        )
    out.append("</g>")
    return out
