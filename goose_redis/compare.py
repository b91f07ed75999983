"""``goose-redis compare BASE.json NEW.json``: two JSON reports -> row-by-row changes and a verdict.

Pure: report dicts in, a ``Comparison`` out (rendered by ``compare_render``). The rule that
decides a regression is in docs/verdict.md and in ``Rule`` below; keep the two together.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidOption
from .verdict import EXIT_FAILED, EXIT_PASSED, integrity_problems

SCHEMA = 1
KINDS = ("aggregated", "request", "transaction", "scenario")
LATENCIES = ("50", "95", "99")  # shown
JUDGED_LATENCIES = ("95", "99")  # can fail the comparison
JUDGED_KINDS = ("aggregated", "request", "transaction")  # scenario times include the random waits

Row = Mapping[str, Any]
Key = tuple[str, str, str]  # (kind, method or scenario or "", name)


@dataclass(frozen=True)
class Rule:
    """A row regresses when it has at least ``min_count`` requests (or runs) on both sides and
    its p95 or p99 grows by more than ``max_regression_pct`` percent of the base AND by more
    than ``floor_ms``, or its fail % grows by more than ``max_fail_increase_pp`` points."""

    max_regression_pct: float = 10.0
    max_fail_increase_pp: float = 1.0
    floor_ms: float = 1.0
    min_count: int = 10


@dataclass(frozen=True)
class Change:
    """One figure on both sides. ``rel_pct`` is None when the base is 0 or either side is missing."""

    base: float | None
    new: float | None

    @property
    def delta(self) -> float | None:
        return None if self.base is None or self.new is None else self.new - self.base

    @property
    def rel_pct(self) -> float | None:
        d = self.delta
        return None if d is None or not self.base else 100.0 * d / float(self.base)


@dataclass
class RowChange:
    kind: str
    label: str
    key: Key
    count: Change
    rps: Change
    fail_pct: Change
    latency: dict[str, Change]
    judged: bool
    regressions: list[str] = field(default_factory=list)  # "p95", "p99", "fail %"


@dataclass
class Comparison:
    rule: Rule
    rows: list[RowChange]
    only_base: list[tuple[str, str]]  # (kind, label)
    only_new: list[tuple[str, str]]
    notes: list[str]

    @property
    def regressed(self) -> list[RowChange]:
        return [r for r in self.rows if r.regressions]

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.regressed else EXIT_PASSED


# ---------------------------------------------------------------- input


def check_report(data: object, option: str, path: str) -> dict[str, Any]:
    """``data`` if it is a goose-redis JSON report of schema 1; InvalidOption (one line) otherwise."""
    if not isinstance(data, dict):
        raise InvalidOption(option, path, "not a goose-redis JSON report: the file holds no JSON object.")
    missing = [k for k in ("schema", "requests", "aggregated") if k not in data]
    if missing:
        raise InvalidOption(option, path, f"not a goose-redis JSON report: no {', '.join(map(repr, missing))}.")
    if data["schema"] != SCHEMA:
        raise InvalidOption(
            option, path, f"report schema {data['schema']!r}: this goose-redis reads schema {SCHEMA} reports."
        )
    if not isinstance(data["requests"], list) or not isinstance(data["aggregated"], dict):
        raise InvalidOption(option, path, "not a goose-redis JSON report: 'requests' or 'aggregated' is malformed.")
    for field_name in ("transactions", "scenarios"):
        if not isinstance(data.get(field_name, []), list):
            raise InvalidOption(option, path, f"not a goose-redis JSON report: {field_name!r} is not a list.")
    return data


def parse_percent(option: str, raw: str) -> float:
    """``10%``, ``10`` or ``2.5%``: a percentage (or percentage points) of at least 0."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*%?\s*", str(raw))
    if m is None:
        raise InvalidOption(option, raw, f"The {option} option takes a percentage, like 10% or 2.5.")
    return float(m.group(1))


# ---------------------------------------------------------------- comparing


def _rows(report: Mapping[str, Any]) -> Iterator[tuple[Key, str, Row]]:
    """(key, label, row) for every row, in the order shown: aggregated, requests, transactions, scenarios."""
    agg = report.get("aggregated")
    if isinstance(agg, Mapping):
        yield ("aggregated", "", "Aggregated"), "Aggregated", agg
    for r in report.get("requests") or []:
        method, name = str(r.get("method", "")), str(r.get("name", ""))
        yield ("request", method, name), f"{method} {name}", r
    for r in report.get("transactions") or []:
        scenario, name = str(r.get("scenario", "")), str(r.get("name", ""))
        yield ("transaction", scenario, name), f"{scenario} / {name}", r
    for r in report.get("scenarios") or []:
        name = str(r.get("name", ""))
        yield ("scenario", "", name), name, r


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _latency(row: Row, key: str) -> float | None:
    pct = row.get("percentiles_ms")
    return _num(pct.get(key)) if isinstance(pct, Mapping) else None


def _judge(rc: RowChange, rule: Rule) -> list[str]:
    out = []
    for key in JUDGED_LATENCIES:
        c = rc.latency[key]
        if c.delta is None or c.base is None or c.delta <= rule.floor_ms:
            continue
        if c.base == 0 or 100.0 * c.delta / c.base > rule.max_regression_pct:
            out.append(f"p{key}")
    d = rc.fail_pct.delta
    if d is not None and d > rule.max_fail_increase_pp:
        out.append("fail %")
    return out


def compare(base: Mapping[str, Any], new: Mapping[str, Any], rule: Rule | None = None) -> Comparison:
    """Rows matched by (kind, method or scenario, name); only judged rows can regress."""
    rule = rule or Rule()
    base_rows = {key: (label, row) for key, label, row in _rows(base)}
    rows: list[RowChange] = []
    seen: set[Key] = set()
    only_new: list[tuple[str, str]] = []
    for key, label, n in _rows(new):
        if key not in base_rows:
            only_new.append((key[0], label))
            continue
        seen.add(key)
        b = base_rows[key][1]
        count = Change(_num(b.get("count")), _num(n.get("count")))
        judged = key[0] in JUDGED_KINDS and (count.base or 0) >= rule.min_count and (count.new or 0) >= rule.min_count
        rc = RowChange(
            kind=key[0],
            label=label,
            key=key,
            count=count,
            rps=Change(_num(b.get("rps")), _num(n.get("rps"))),
            fail_pct=Change(_num(b.get("fail_pct")), _num(n.get("fail_pct"))),
            latency={k: Change(_latency(b, k), _latency(n, k)) for k in LATENCIES},
            judged=judged,
        )
        if judged:
            rc.regressions = _judge(rc, rule)
        rows.append(rc)
    only_base = [(key[0], label) for key, (label, _) in base_rows.items() if key not in seen]
    return Comparison(rule, rows, only_base, only_new, _notes(base, new))


def _notes(base: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What makes the two runs less comparable, or either less trustworthy."""
    notes = []
    for side, report in (("base", base), ("new", new)):
        for problem in integrity_problems(report) or []:
            notes.append(f"{side} report is incomplete: {problem}")
    for key, what in (("mode", "mode"), ("users", "users"), ("run_time_s", "run time (s)"), ("host", "host")):
        if base.get(key) != new.get(key):
            notes.append(f"{what} differs: {base.get(key)!r} in base, {new.get(key)!r} in new")
    return notes
