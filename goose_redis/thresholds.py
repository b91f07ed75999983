"""Thresholds: ``[ROW:] METRIC OP VALUE``, parsed, checked against the load test, and
evaluated on a report dict (the Manager's merged report and the standalone report alike).

The grammar, units and rules are in docs/verdict.md. Parsing raises ``InvalidOption``
so a bad expression stops the run before any load; evaluation never raises.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InvalidOption

if TYPE_CHECKING:
    from .config import Config

OPTION = "--threshold"
AGGREGATED = "Aggregated"
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda v, lim: v < lim,
    "<=": lambda v, lim: v <= lim,
    ">": lambda v, lim: v > lim,
    ">=": lambda v, lim: v >= lim,
}
# Times in milliseconds: the percentile key of ``percentiles_ms``, or a row field.
TIME_METRICS: dict[str, str] = {
    "p50": "50", "p75": "75", "p90": "90", "p95": "95", "p99": "99", "p99.9": "99.9",
    "mean": "mean_ms", "min": "min_ms", "max": "max_ms",
}  # fmt: skip
COUNT_METRICS: dict[str, str] = {"fails": "fail_count", "count": "count", "rps": "rps", "fail_pct": "fail_pct"}
REPORT_METRICS = ("dropped_iterations",)  # whole-run figures: no ROW
METRICS = (*TIME_METRICS, *COUNT_METRICS, *REPORT_METRICS)
# Figures that only grow during a run: a broken upper bound stays broken, a lower bound may still be met.
GROWING = frozenset({"count", "fails", "dropped_iterations", "max"})
SHRINKING = frozenset({"min"})

_EXPR = re.compile(
    r"^(?:(?P<row>.*):)?\s*(?P<metric>[A-Za-z_][A-Za-z0-9_.]*)\s*(?P<op>[<>=!]+)\s*(?P<value>\S.*?)?\s*$", re.DOTALL
)
_NUMBER = re.compile(r"^(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[A-Za-z%]*)$")
_QUALIFIERS = ("transaction", "scenario")


@dataclass(frozen=True)
class Threshold:
    """One expression. ``limit`` is in ms for times, percent for ``fail_pct``, else a plain number.

    ``kind`` says which rows ``row`` names: "aggregated", "request" (``method`` + ``name``),
    "transaction", "scenario", or "named" (every transaction and scenario row called ``name``).
    """

    expr: str
    row: str
    metric: str
    op: str
    limit: float
    kind: str
    name: str
    method: str = ""


def _bad(expr: str, detail: str) -> InvalidOption:
    return InvalidOption(OPTION, expr, detail)


def _limit(expr: str, metric: str, raw: str | None) -> float:
    if not raw:
        raise _bad(expr, f"no value after the operator: write {metric} < 500 (see docs/verdict.md).")
    m = _NUMBER.match(raw)
    if m is None:
        raise _bad(expr, f"{raw!r} is not a limit: write a number of at least 0 with an optional unit (500, 0.5s, 1%).")
    value, unit = float(m["num"]), m["unit"]
    if metric in TIME_METRICS:
        if unit not in ("", "ms", "s"):
            raise _bad(expr, f"unknown unit {unit!r} for {metric}: use ms (the default) or s.")
        return value * 1000.0 if unit == "s" else value
    if metric == "fail_pct" and unit in ("", "%"):
        return value
    if unit:
        raise _bad(expr, f"{metric} takes a plain number, without a unit ({unit!r}).")
    return value


def _target(expr: str, row: str | None) -> tuple[str, str, str, str]:
    """(row as shown, kind, name, method) from the ROW text, by its shape alone."""
    if row is None:
        return AGGREGATED, "aggregated", AGGREGATED, ""
    row = row.strip()
    if not row:
        raise _bad(expr, "the row before ':' is empty: leave out 'ROW:' for the aggregated row.")
    if row == AGGREGATED:
        return row, "aggregated", row, ""
    first, _, rest = row.partition(" ")
    rest = rest.strip()
    if first in HTTP_METHODS:
        if not rest:
            raise _bad(expr, f"the request row {row!r} has no name: write '{first} name: ...'.")
        return row, "request", rest, first
    if first in _QUALIFIERS and rest:
        return row, first, rest, ""
    return row, "named", row, ""


def parse_threshold(text: str) -> Threshold:
    """One ``[ROW:] METRIC OP VALUE``; InvalidOption naming the expression when malformed."""
    expr = str(text).strip()
    if not expr:
        raise _bad(text, "the expression is empty: write [ROW:] METRIC OP VALUE, like 'p95 < 500'.")
    m = _EXPR.match(expr)
    if m is None:
        raise _bad(expr, "expected [ROW:] METRIC OP VALUE, like 'p95 < 500' or 'GET /login: fail_pct < 1'.")
    metric, op = m["metric"], m["op"]
    if metric not in METRICS:
        raise _bad(expr, f"unknown metric {metric!r}: use one of {', '.join(METRICS)}.")
    if op not in OPS:
        raise _bad(expr, f"unknown operator {op!r}: use <, <=, > or >=.")
    if m["value"] is not None and re.search(r"[<>=!]", m["value"]):
        raise _bad(expr, "more than one operator: write one comparison per threshold.")
    limit = _limit(expr, metric, m["value"])
    row, kind, name, method = _target(expr, m["row"])
    if metric in REPORT_METRICS and kind != "aggregated":
        raise _bad(expr, f"{metric} counts the whole run: leave out the row.")
    return Threshold(expr, row, metric, op, limit, kind, name, method)


def parse_thresholds(texts: Iterable[str]) -> tuple[Threshold, ...]:
    return tuple(parse_threshold(t) for t in texts)


def bind(thresholds: Sequence[Threshold], transactions: Iterable[str], scenarios: Iterable[str]) -> tuple[
    Threshold, ...
]:  # fmt: skip
    """Check every ROW against the load test's names; InvalidOption for a row it cannot produce.

    An exact transaction or scenario name wins over the shape of the text (a transaction
    called ``GET home`` is that transaction, not a request).
    """
    tx, sc = set(transactions), set(scenarios)
    out = []
    for t in thresholds:
        if t.kind == "aggregated":
            out.append(t)
        elif t.row in tx or t.row in sc:
            out.append(Threshold(t.expr, t.row, t.metric, t.op, t.limit, "named", t.row))
        elif t.kind == "request":
            out.append(t)  # request names are only known once requests are made
        elif (t.kind == "transaction" and t.name in tx) or (t.kind == "scenario" and t.name in sc):
            out.append(t)
        elif t.kind in _QUALIFIERS:
            raise _bad(t.expr, f"the load test has no {t.kind} {t.name!r}.")
        else:
            raise _bad(
                t.expr,
                f"the load test has no transaction or scenario {t.row!r}, and a request row starts with "
                f"its method ({', '.join(HTTP_METHODS)}): write 'GET {t.row}: ...'.",
            )
    return tuple(out)


# ---------------------------------------------------------------- evaluation


def _rows(t: Threshold, report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if t.kind == "aggregated":
        agg = report.get("aggregated")
        return [agg] if isinstance(agg, Mapping) else []
    if t.kind == "request":
        return [r for r in report.get("requests") or [] if r.get("method") == t.method and r.get("name") == t.name]
    rows: list[Mapping[str, Any]] = []
    if t.kind in ("transaction", "named"):
        rows += [r for r in report.get("transactions") or [] if r.get("name") == t.name]
    if t.kind in ("scenario", "named"):
        rows += [r for r in report.get("scenarios") or [] if r.get("name") == t.name]
    return rows


def _value(metric: str, row: Mapping[str, Any]) -> float | None:
    if metric in TIME_METRICS:
        key = TIME_METRICS[metric]
        raw = (row.get("percentiles_ms") or {}).get(key) if key[0].isdigit() else row.get(key)
    else:
        raw = row.get(COUNT_METRICS[metric])
    return None if raw is None else float(raw)


def measure(t: Threshold, report: Mapping[str, Any]) -> tuple[float | None, str]:
    """(the measured value, a note when there is none). Several rows: the worst for the operator."""
    if t.metric in REPORT_METRICS:
        return float(report.get(t.metric) or 0), ""
    rows = _rows(t, report)
    if not rows:
        return None, "no such row in the results"
    values = [_value(t.metric, r) for r in rows]
    if any(v is None for v in values):
        return None, "no measurements in the row"
    known = [v for v in values if v is not None]
    return (max(known) if t.op in ("<", "<=") else min(known)), ""


def evaluate(thresholds: Sequence[Threshold], report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The report's ``thresholds`` field: one entry per expression, in the order given."""
    out = []
    for t in thresholds:
        value, note = measure(t, report)
        passed = value is not None and OPS[t.op](value, t.limit)
        out.append(
            {"expr": t.expr, "row": t.row, "metric": t.metric, "op": t.op, "limit": t.limit, "value": value,
             "passed": passed, "note": note}
        )  # fmt: skip
    return out


def format_value(metric: str, value: float | None) -> str:
    """A measured value or a limit with its unit, as the tables show it."""
    if value is None:
        return "-"
    if metric in TIME_METRICS:
        return f"{value:,.1f} ms" if value >= 10 else f"{value:.2f} ms"
    if metric == "fail_pct":
        return f"{value:.2f} %"
    if metric == "rps":
        return f"{value:,.2f}/s"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def measured_text(result: Mapping[str, Any]) -> str:
    """A result's measured value with its unit, or why there is none."""
    value = result.get("value")
    if value is None:
        return str(result.get("note") or "no value")
    return format_value(str(result.get("metric")), float(value))


def describe_failure(result: Mapping[str, Any]) -> str:
    """``threshold "p95 < 500" failed (812.3 ms)``: the reason given in the verdict and the stop reason."""
    return f'threshold "{result.get("expr")}" failed ({measured_text(result)})'


# ---------------------------------------------------------------- the abort


def can_abort(t: Threshold) -> bool:
    """Whether a broken threshold may stop the run: rates and percentiles, and bounds that a
    growing (or shrinking) figure can never meet again. A lower bound on a count may still be met."""
    if t.metric in GROWING:
        return t.op in ("<", "<=")
    if t.metric in SHRINKING:
        return t.op in (">", ">=")
    return True


def watch_for(config: Config) -> ThresholdWatch | None:
    """The watch a run needs: None without ``--threshold-abort``."""
    if not config.threshold_abort:
        return None
    return ThresholdWatch(config.thresholds, config.threshold_grace_s, wait_for_reset=config.reset_metrics)


class ThresholdWatch:
    """The live check behind ``--threshold-abort``, shared by the standalone run and the Manager.

    ``poll`` is called on every tick; at most every ``every_s`` it builds the live report
    (only then: it is not free) and returns the stop reason once a threshold has failed,
    after ``grace_s`` of the measured period (the report's ``duration_s``). It fires once.
    With ``wait_for_reset`` (metrics are reset after the ramp-up) nothing is judged before
    the reset: the figures it discards cannot fail the run.
    """

    def __init__(
        self, thresholds: Sequence[Threshold], grace_s: float, *, wait_for_reset: bool, every_s: float = 1.0
    ) -> None:
        self.thresholds = [t for t in thresholds if can_abort(t)]
        self.grace_s = grace_s
        self.wait_for_reset = wait_for_reset
        self.every_s = every_s
        self.fired: str | None = None
        self._next = -math.inf

    def poll(self, now: float, report: Callable[[], Mapping[str, Any]]) -> str | None:
        if self.fired is not None or not self.thresholds or now < self._next:
            return None
        self._next = now + self.every_s
        reason = self.check(report())
        if reason is not None:
            self.fired = reason
        return reason

    def check(self, report: Mapping[str, Any]) -> str | None:
        """The first abortable threshold that has clearly failed on ``report``, or None."""
        if self.wait_for_reset and not report.get("metrics_reset"):
            return None
        if float(report.get("duration_s") or 0.0) < self.grace_s:
            return None
        for result in evaluate(self.thresholds, report):
            # No value yet (a row not seen so far) is not a failure while the run goes on.
            if result["value"] is not None and not result["passed"]:
                return describe_failure(result)
        return None
