"""Thresholds, the verdict and compare as pure logic: parsing every malformed shape, binding
ROWs to a load test, evaluating on report dicts built by ``build_report`` from real Metrics,
the abort's rules, exit codes, and the comparison rule. No process, no network: fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from goose_redis.compare import Rule, check_report, compare, parse_percent
from goose_redis.compare_render import render_json, render_markdown, render_text
from goose_redis.errors import InvalidOption
from goose_redis.metrics import Metrics
from goose_redis.report.console import render_tables
from goose_redis.report.csv_report import thresholds_csv_path, write_csv
from goose_redis.report.data import RunInfo, build_report
from goose_redis.report.html import render_html
from goose_redis.report.markdown import render_markdown as report_markdown
from goose_redis.scenario import LoadTest, Scenario, Transaction
from goose_redis.thresholds import (
    Threshold,
    ThresholdWatch,
    bind,
    can_abort,
    evaluate,
    parse_threshold,
    parse_thresholds,
)
from goose_redis.verdict import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_PASSED, apply_verdict, compute_verdict


async def _noop(user: Any) -> None:
    return None


LOAD_TEST = LoadTest(
    [
        Scenario("Browse").register(Transaction(_noop, name="front page"), Transaction(_noop, name="Checkout")),
        Scenario("Checkout").register(Transaction(_noop, name="pay")),
    ]
)
TX_NAMES = ["front page", "Checkout", "pay"]
SC_NAMES = ["Browse", "Checkout"]


def make_report(
    slow_ms: float = 20.0, fast_ms: float = 2.0, n: int = 100, fails: int = 0, duration_s: float = 10.0
) -> dict[str, Any]:
    """A report as a run would build it: ``n`` slow and ``n`` fast requests, ``fails`` slow ones failed."""
    m = Metrics()
    for i in range(n):
        m.request_row("GET", "/slow").record(slow_ms * (0.9 + 0.2 * i / n), i >= fails, 200 if i >= fails else 500)
        m.request_row("GET", "/").record(fast_ms, True, 200)
        m.transaction_row(0, 0).record(slow_ms + fast_ms, True)
        m.transaction_row(0, 1).record(fast_ms, True)
        m.transaction_row(1, 0).record(fast_ms, True)
        m.scenario_row(0).record(3 * slow_ms, True)
    info = RunInfo("standalone", 1000.0, 1000.0 + duration_s, 1000.0, 4, "http://127.0.0.1:1", 1.0, 10.0, None,
                   False, scenario_users={0: 2, 1: 2})  # fmt: skip
    return build_report(m, LOAD_TEST, info)


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "row", "metric", "op", "limit"),
    [
        ("p95 < 500", "Aggregated", "p95", "<", 500.0),
        ("p95<500", "Aggregated", "p95", "<", 500.0),
        ("  p99.9 <= 0.5s ", "Aggregated", "p99.9", "<=", 500.0),
        ("p50 < 250ms", "Aggregated", "p50", "<", 250.0),
        ("mean >= 1.5", "Aggregated", "mean", ">=", 1.5),
        ("fail_pct < 1", "Aggregated", "fail_pct", "<", 1.0),
        ("fail_pct < 0.5%", "Aggregated", "fail_pct", "<", 0.5),
        ("count > 100", "Aggregated", "count", ">", 100.0),
        ("rps >= .5", "Aggregated", "rps", ">=", 0.5),
        ("Aggregated: max < 2s", "Aggregated", "max", "<", 2000.0),
        ("GET /login: fails <= 0", "GET /login", "fails", "<=", 0.0),
        ("GET /a:b: min > 3", "GET /a:b", "min", ">", 3.0),  # the last ':' separates the row
        ("front page : p75 < 40", "front page", "p75", "<", 40.0),
        ("dropped_iterations < 1", "Aggregated", "dropped_iterations", "<", 1.0),
    ],
)
def test_well_formed_expressions(text: str, row: str, metric: str, op: str, limit: float) -> None:
    t = parse_threshold(text)
    assert (t.expr, t.row, t.metric, t.op, t.limit) == (text.strip(), row, metric, op, limit)


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("p95", "expected [ROW:] METRIC OP VALUE"),
        ("p95 500", "expected [ROW:] METRIC OP VALUE"),
        ("< 500", "expected [ROW:] METRIC OP VALUE"),
        ("500 > p95", "expected [ROW:] METRIC OP VALUE"),
        ("p95 <", "no value after the operator"),
        ("p96 < 500", "unknown metric 'p96'"),
        ("P95 < 500", "unknown metric 'P95'"),
        ("latency < 500", "unknown metric"),
        ("p95 == 500", "unknown operator '=='"),
        ("p95 = 500", "unknown operator '='"),
        ("p95 =< 500", "unknown operator '=<'"),
        ("p95 != 500", "unknown operator '!='"),
        ("p95 < < 500", "more than one operator"),
        ("p95 < 500 < 600", "more than one operator"),
        ("p95 < abc", "is not a limit"),
        ("p95 < -5", "is not a limit"),
        ("p95 < nan", "is not a limit"),
        ("p95 < inf", "is not a limit"),
        ("p95 < 1e3", "is not a limit"),
        ("p95 < 500 ms extra", "is not a limit"),
        ("p95 < 5min", "unknown unit 'min'"),
        ("p95 < 5%", "unknown unit '%'"),
        ("count > 5ms", "without a unit"),
        ("rps > 5s", "without a unit"),
        ("fail_pct < 1ms", "without a unit"),
        (": p95 < 5", "the row before ':' is empty"),
        ("  : p95 < 5", "the row before ':' is empty"),
        ("GET : p95 < 5", "has no name"),
        ("GET /x: dropped_iterations < 1", "counts the whole run"),
    ],
)
def test_malformed_expressions_name_the_expression(text: str, detail: str) -> None:
    with pytest.raises(InvalidOption) as info:
        parse_threshold(text)
    assert info.value.option == "--threshold"
    assert detail in info.value.detail
    assert "\n" not in str(info.value)


def test_rows_are_bound_to_the_load_test() -> None:
    bound = bind(
        parse_thresholds(["front page: p95 < 5", "GET /x: p95 < 5", "Browse: count > 1", "p95 < 1"]), TX_NAMES, SC_NAMES
    )
    assert [t.kind for t in bound] == ["named", "request", "named", "aggregated"]
    # A name that is both a transaction and a scenario names both; a qualifier picks one.
    assert bind(parse_thresholds(["transaction Checkout: p95 < 5"]), TX_NAMES, SC_NAMES)[0].kind == "transaction"
    assert bind(parse_thresholds(["scenario Checkout: p95 < 5"]), TX_NAMES, SC_NAMES)[0].kind == "scenario"
    for text, detail in [
        ("nope: p95 < 5", "no transaction or scenario 'nope'"),
        ("get /x: p95 < 5", "no transaction or scenario"),  # methods are upper case
        ("transaction Browse: p95 < 5", "no transaction 'Browse'"),
        ("scenario pay: p95 < 5", "no scenario 'pay'"),
    ]:
        with pytest.raises(InvalidOption) as info:
            bind(parse_thresholds([text]), TX_NAMES, SC_NAMES)
        assert info.value.value == text and detail in info.value.detail


def test_an_exact_transaction_name_wins_over_the_request_shape() -> None:
    (t,) = bind(parse_thresholds(["GET home: p95 < 5"]), ["GET home"], [])
    assert t.kind == "named"


# ---------------------------------------------------------------- evaluation


def results_of(exprs: list[str], report: dict[str, Any]) -> list[dict[str, Any]]:
    return evaluate(bind(parse_thresholds(exprs), TX_NAMES, SC_NAMES), report)


def test_evaluation_reads_the_rows_of_the_report() -> None:
    report = make_report(slow_ms=20, fast_ms=2, n=100, fails=5)
    res = {
        r["expr"]: r
        for r in results_of(
            [
                "p95 < 500",
                "p75 < 3",
                "GET /: p95 < 3",
                "GET /slow: p95 < 3",
                "GET /slow: min >= 17.9",
                "GET /slow: fail_pct < 5",
                "GET /slow: fails <= 5",
                "count >= 200",
                "rps > 19.9",
                "front page: mean < 25",
                "transaction Checkout: p95 < 1",
                "Browse: count > 0",
                "Checkout: max < 100",  # the transaction (2 ms) and the scenario (none ran): null, fails
                "GET /missing: p95 < 5",
                "dropped_iterations < 1",
            ],
            report,
        )
    }
    assert res["p95 < 500"]["passed"] and res["p95 < 500"]["row"] == "Aggregated"
    assert not res["p75 < 3"]["passed"]  # half the requests take ~20 ms
    assert res["GET /: p95 < 3"]["passed"] and res["GET /: p95 < 3"]["value"] == pytest.approx(2.0)
    assert not res["GET /slow: p95 < 3"]["passed"]
    assert res["GET /slow: p95 < 3"]["value"] == pytest.approx(report["requests"][1]["percentiles_ms"]["95"])
    assert res["GET /slow: min >= 17.9"]["passed"]
    assert not res["GET /slow: fail_pct < 5"]["passed"] and res["GET /slow: fail_pct < 5"]["value"] == 5.0
    assert res["GET /slow: fails <= 5"]["passed"]
    assert res["count >= 200"]["passed"] and res["count >= 200"]["value"] == 200
    assert res["rps > 19.9"]["passed"] and res["rps > 19.9"]["value"] == pytest.approx(20.0)
    assert res["front page: mean < 25"]["passed"]
    assert not res["transaction Checkout: p95 < 1"]["passed"]
    assert res["Browse: count > 0"]["passed"]
    checkout = res["Checkout: max < 100"]
    assert not checkout["passed"] and checkout["value"] is None
    missing = res["GET /missing: p95 < 5"]
    assert (missing["value"], missing["passed"], missing["note"]) == (None, False, "no such row in the results")
    assert res["dropped_iterations < 1"]["passed"]  # a report without the field: none dropped


def test_several_rows_of_one_name_give_the_worst() -> None:
    report = make_report()
    report["scenarios"][1]["percentiles_ms"] = {"95": 900.0}
    report["scenarios"][1]["count"] = 3
    (upper,) = results_of(["Checkout: p95 < 100"], report)
    assert upper["value"] == 900.0 and not upper["passed"]
    (lower,) = results_of(["Checkout: p95 > 1"], report)
    assert lower["value"] == pytest.approx(2.0) and lower["passed"]


# ---------------------------------------------------------------- the verdict


def test_exit_codes_from_thresholds_and_integrity() -> None:
    report = make_report()
    passing = results_of(["p95 < 500"], report)
    failing = results_of(["p95 < 1"], report)
    complete = {"integrity": {"complete": True, "problems": []}}
    incomplete = {"integrity": {"complete": False, "problems": ["worker 2 was lost"]}}
    assert compute_verdict([], {})["exit_code"] == EXIT_PASSED  # no integrity field: complete
    assert compute_verdict(passing, complete) == {"passed": True, "exit_code": 0, "reasons": [], "aborted": None}
    failed = compute_verdict(failing, complete)
    assert failed["exit_code"] == EXIT_FAILED == 99 and not failed["passed"]
    assert failed["reasons"][0].startswith('threshold "p95 < 1" failed (')
    assert compute_verdict([], incomplete) == {
        "passed": False, "exit_code": EXIT_INCOMPLETE, "reasons": ["incomplete: worker 2 was lost"], "aborted": None,
    }  # fmt: skip
    assert compute_verdict(passing, incomplete)["exit_code"] == EXIT_FAILED  # thresholds never pass on a short merge
    aborted = compute_verdict(passing, complete, aborted='threshold "p95 < 1" failed (20 ms)')
    assert aborted["exit_code"] == EXIT_FAILED
    assert aborted["reasons"] == ['the run was stopped early: threshold "p95 < 1" failed (20 ms)']


def test_apply_verdict_adds_both_fields_to_every_report() -> None:
    report = make_report()
    assert apply_verdict(report, ()) == 0
    assert report["thresholds"] == [] and report["verdict"]["passed"] is True
    assert "THRESHOLDS" not in render_tables(report)  # nothing to show: the usual tables only
    assert "## Verdict" not in report_markdown(report)
    assert 'id="verdict"' not in render_html(report)


def test_every_format_shows_thresholds_and_an_incomplete_merge(tmp_path: Path) -> None:
    report = make_report()
    report["integrity"] = {"complete": False, "problems": ["worker 2 was lost <after 3 s>"]}
    code = apply_verdict(report, bind(parse_thresholds(["p95 < 500", "GET /slow: p95 < 3"]), TX_NAMES, SC_NAMES))
    assert code == EXIT_FAILED
    console = render_tables(report)
    tail = console.split("=== THRESHOLDS ===", 1)[1]
    assert console.rstrip().endswith(tail.rstrip())  # the very end, after the overview
    assert "=== OVERVIEW ===" not in tail
    assert "p95 < 500" in tail and "pass" in tail and "FAIL" in tail
    assert "INCOMPLETE: worker 2 was lost <after 3 s>" in tail
    assert "Verdict: FAILED (exit code 99)" in tail
    md = report_markdown(report)
    assert md.index("## Verdict") < md.index("## Overview")
    assert "| GET /slow: p95 &lt; 3 |" in md and "**FAIL**" in md and "**Incomplete:**" in md
    html = render_html(report)
    assert html.index('id="integrity"') < html.index('id="verdict"') < html.index('class="cards"')
    assert 'class="verdict fail"' in html and "&lt;after 3 s&gt;" in html
    assert '<tr class="pass"><td>p95 &lt; 500</td>' in html
    written = write_csv(report, str(tmp_path / "run.csv"))
    assert written[-1] == thresholds_csv_path(str(tmp_path / "run.csv")) == str(tmp_path / "run-thresholds.csv")
    rows = Path(written[-1]).read_text().splitlines()
    assert rows[0] == "expr,row,metric,op,limit,value,passed,note"
    assert rows[2].startswith("GET /slow: p95 < 3,GET /slow,p95,<,3.0,") and rows[2].endswith(",false,")


# ---------------------------------------------------------------- the abort's rules


@pytest.mark.parametrize(
    ("text", "abortable"),
    [
        ("p95 < 5", True), ("p95 > 5", True), ("mean < 5", True), ("fail_pct < 1", True), ("rps > 5", True),
        ("count < 100", True), ("count > 100", False), ("fails <= 0", True), ("fails >= 1", False),
        ("max < 5", True), ("max > 5", False), ("min > 5", True), ("min < 5", False),
        ("dropped_iterations < 1", True), ("dropped_iterations > 1", False),
    ],
)  # fmt: skip
def test_only_thresholds_that_cannot_recover_or_are_rates_abort(text: str, abortable: bool) -> None:
    assert can_abort(parse_threshold(text)) is abortable


def test_the_watch_waits_for_the_grace_and_the_reset_and_fires_once() -> None:
    report = make_report(slow_ms=20, duration_s=10.0)
    thresholds: list[Threshold] = list(parse_thresholds(["count > 1000000", "GET /missing: p95 < 1", "p95 < 5"]))
    watch = ThresholdWatch(thresholds, grace_s=15.0, wait_for_reset=False)
    assert watch.check(report) is None  # 10 s measured, grace 15 s
    report["duration_s"] = 15.0
    assert watch.check(report) == f'threshold "p95 < 5" failed ({results_of(["p95 < 5"], report)[0]["value"]:.1f} ms)'
    waiting = ThresholdWatch(thresholds, grace_s=0.0, wait_for_reset=True)
    assert waiting.check(report) is None  # metrics_reset false: the ramp-up is still on
    report["metrics_reset"] = True
    assert waiting.check(report) is not None
    calls = []

    def live() -> dict[str, Any]:
        calls.append(1)
        return report

    assert watch.poll(100.0, live) is not None and watch.fired
    assert watch.poll(200.0, live) is None and len(calls) == 1  # fired once
    idle = ThresholdWatch(parse_thresholds(["p95 < 500"]), grace_s=0.0, wait_for_reset=False, every_s=1.0)
    assert idle.poll(0.0, live) is None and idle.poll(0.5, live) is None and len(calls) == 2  # at most every 1 s


# ---------------------------------------------------------------- compare


def test_compare_flags_a_threefold_slowdown_and_passes_a_report_against_itself() -> None:
    base, slow = make_report(slow_ms=20), make_report(slow_ms=60)
    same = compare(base, json.loads(json.dumps(base)))
    assert same.exit_code == 0 and not same.regressed and not same.only_base and not same.only_new
    assert all(r.count.delta == 0 for r in same.rows)
    worse = compare(base, slow)
    assert worse.exit_code == 99
    labels = {r.label: r.regressions for r in worse.regressed}
    assert labels == {"Aggregated": ["p95", "p99"], "GET /slow": ["p95", "p99"], "Browse / front page": ["p95", "p99"]}
    slow_row = next(r for r in worse.rows if r.label == "GET /slow")
    assert slow_row.latency["95"].rel_pct == pytest.approx(200.0, rel=0.03)
    scenario = next(r for r in worse.rows if r.kind == "scenario" and r.label == "Browse")
    assert not scenario.judged and not scenario.regressions  # iteration times include waits
    assert "REGRESSED: p95, p99" in render_text(worse, "base.json", "new.json")
    md = render_markdown(worse, "base.json", "new.json")
    assert md.startswith("## Load test comparison: Regression")
    assert "| request: GET /slow | 100 → 100 |" in md and "**REGRESSED: p95, p99**" in md
    doc = json.loads(render_json(worse, "base.json", "new.json"))
    assert doc["exit_code"] == 99 and doc["passed"] is False
    assert [r["label"] for r in doc["rows"] if r["regressions"]] == list(labels)


def test_the_regression_rule_in_detail() -> None:
    base = make_report(slow_ms=20, fast_ms=0.2)
    # 0.2 -> 0.3 ms is +50 % but below the 1 ms floor: noise, not a regression.
    noise = compare(base, make_report(slow_ms=20, fast_ms=0.3))
    assert not noise.regressed
    # +8 % passes at the default 10 % and fails at 5 %.
    slower = make_report(slow_ms=21.6, fast_ms=0.2)
    assert not compare(base, slower).regressed
    assert compare(base, slower, Rule(max_regression_pct=5)).regressed
    # Fail % up by 2 points fails at the default 1 point, not at 3.
    failing = make_report(fails=4, fast_ms=0.2)  # 4 of 200 requests: 2 % in the aggregated row, 4 % in GET /slow
    assert {r.label: r.regressions for r in compare(base, failing).regressed} == {
        "Aggregated": ["fail %"], "GET /slow": ["fail %"]
    }  # fmt: skip
    assert not compare(base, failing, Rule(max_fail_increase_pp=5)).regressed
    # Rows with fewer than 10 requests on either side are not judged.
    few = compare(make_report(slow_ms=20, n=4), make_report(slow_ms=60, n=4))  # 8 in the aggregated row
    assert not few.regressed and not any(r.judged for r in few.rows)
    # Faster is never a regression.
    assert not compare(make_report(slow_ms=60), base).regressed


def test_rows_on_one_side_only_are_listed() -> None:
    base, new = make_report(), make_report()
    new["requests"].append({**new["requests"][0], "name": "/new"})
    del base["transactions"][1]
    c = compare(base, new)
    assert c.only_new == [("request", "GET /new"), ("transaction", "Browse / Checkout")]
    assert c.only_base == []
    assert "Only in new:" in render_text(c, "a", "b")


def test_compare_notes_runs_that_differ_or_are_incomplete() -> None:
    base, new = make_report(), make_report()
    new["users"] = 8
    new["integrity"] = {"complete": False, "problems": ["no final metrics from worker 1"]}
    assert compare(base, new).notes == [
        "new report is incomplete: no final metrics from worker 1",
        "users differs: 4 in base, 8 in new",
    ]


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        ([1, 2], "no JSON object"),
        ("text", "no JSON object"),
        ({"schema": 1, "requests": []}, "no 'aggregated'"),
        ({"hello": 1}, "no 'schema', 'requests', 'aggregated'"),
        ({"schema": 2, "requests": [], "aggregated": {}}, "report schema 2"),
        ({"schema": 1, "requests": {}, "aggregated": {}}, "malformed"),
        ({"schema": 1, "requests": [], "aggregated": {}, "transactions": 3}, "'transactions' is not a list"),
    ],
)
def test_what_is_not_a_report(data: object, detail: str) -> None:
    with pytest.raises(InvalidOption) as info:
        check_report(data, "NEW", "x.json")
    assert (info.value.option, info.value.value) == ("NEW", "x.json") and detail in info.value.detail


def test_percentages() -> None:
    assert parse_percent("--max-regression", "10%") == 10.0
    assert parse_percent("--max-regression", " 2.5 ") == 2.5
    for bad in ("-5%", "ten", "", "5%%", "1e2"):
        with pytest.raises(InvalidOption):
            parse_percent("--max-regression", bad)
