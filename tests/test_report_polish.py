"""What a reader of the reports meets first (issue 12): the exceptions table, the transactions'
Aggregated row, a Duration that says what it measures, running snapshots that do not claim an
end, round axis ticks and values on hover, the slowest requests charted in distinct colours,
response sizes, units in Markdown, CSV beside the file asked for; and the later report
fields drawn when present (test plan, control events, dropped iterations, corrected figures)."""

from __future__ import annotations

import csv
import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from support.report_samples import empty_report, full_report, sample_report

from goose_redis.metrics import Metrics
from goose_redis.report.charts import ROW_COLORS, build_charts, slowest_rows
from goose_redis.report.console import render_tables
from goose_redis.report.csv_report import write_csv
from goose_redis.report.data import Phase, RunInfo, build_report, phases_of
from goose_redis.report.fmt import exceptions
from goose_redis.report.html import render_html
from goose_redis.report.markdown import render_markdown
from goose_redis.scenario import LoadTest, Scenario, Transaction

SVG_RE = re.compile(r'<svg class="chart" data-chart="([a-z]+)".*?</svg>', re.S)


def without_sizes(report: dict[str, Any]) -> dict[str, Any]:
    """The report as a release before response sizes would have written it."""
    for row in [*report["requests"], report["aggregated"]]:
        row.pop("bytes", None)
        row.pop("mean_bytes", None)
    return report


def charts(page: str) -> dict[str, str]:
    return {m.group(1): m.group(0) for m in SVG_RE.finditer(page)}


def section(text: str, title: str) -> str:
    """One `` === TITLE ===`` block of the console tables."""
    return text.split(f" === {title} ===", 1)[1].split("\n\n", 1)[0]


# ---------------------------------------------------------------- the report dict


async def _noop(user: Any) -> None:
    return None


def _load_test() -> LoadTest:
    a = Scenario("Alpha").register(Transaction(_noop, name="one"), Transaction(_noop, name="two"))
    b = Scenario("Beta").register(Transaction(_noop, name="three"))
    return LoadTest([a, b], [a, b])


def _info(**kw: Any) -> RunInfo:
    base: dict[str, Any] = dict(mode="standalone", started_at=1000.0, ended_at=1010.0, measured_from=1002.0, users=2,
                                host="http://127.0.0.1:9", hatch_rate=1.0, run_time_s=8.0, iterations=None,
                                metrics_reset=True)  # fmt: skip
    base.update(kw)
    return RunInfo(**base)


def test_report_has_an_aggregated_transaction_row_and_requests_sorted_by_name_then_method() -> None:
    m = Metrics()
    for method, name, ms in [("POST", "/b", 5.0), ("GET", "/b", 7.0), ("GET", "/a", 9.0), ("DELETE", "/b", 1.0)]:
        m.request_row(method, name).record(ms, True, 200)
    m.transaction_row(0, 0).record(10.0, True)
    m.transaction_row(0, 1).record(30.0, False, None, "ValueError: boom")
    m.transaction_row(1, 0).record(20.0, True)
    report = build_report(m, _load_test(), _info())
    assert [(r["name"], r["method"]) for r in report["requests"]] == [
        ("/a", "GET"), ("/b", "DELETE"), ("/b", "GET"), ("/b", "POST")]  # fmt: skip
    agg = report["aggregated_transactions"]
    assert (agg["name"], agg["count"], agg["fail_count"]) == ("Aggregated", 3, 1)
    assert (agg["min_ms"], agg["max_ms"], agg["mean_ms"]) == (10.0, 30.0, 20.0)
    assert agg["errors"] == {"ValueError: boom": 1}
    assert exceptions(report) == [{"scenario": "Alpha", "transaction": "two", "error": "ValueError: boom", "count": 1}]


def test_a_running_report_has_no_stop_phase() -> None:
    # Still running at 1010: ramp-up then steady up to now, no "stop" of zero length.
    assert phases_of(1000.0, 1002.0, None, 1010.0) == [Phase("ramp-up", 1000.0, 1002.0),
                                                       Phase("steady", 1002.0, 1010.0)]  # fmt: skip
    assert phases_of(1000.0, None, None, 1001.0) == [Phase("ramp-up", 1000.0, 1001.0)]
    # A finished run goes through all three.
    assert [p.name for p in phases_of(1000.0, 1002.0, 1009.0, 1010.0)] == ["ramp-up", "steady", "stop"]


# ---------------------------------------------------------------- console


def test_console_exceptions_and_the_transactions_aggregated_row() -> None:
    text = render_tables(full_report())
    block = section(text, "EXCEPTIONS")
    lines = [line for line in block.splitlines() if "|" in line]
    assert lines[0].split("|")[0].strip() == "Exception"
    assert "KeyError: 'form_build_id'" in lines[1] and "AuthBrowsingUser: (Auth) login" in lines[1]
    assert lines[1].rstrip().endswith("4") and lines[2].rstrip().endswith("1")  # most frequent first
    assert text.index(" === EXCEPTIONS ===") < text.index(" === ERRORS ===")
    tx = section(text, "PER TRANSACTION METRICS")
    agg_lines = [line for line in tx.splitlines() if line.startswith(" Aggregated ")]
    assert len(agg_lines) == 3  # counts, times, percentiles
    assert "19.8" in agg_lines[1]
    # Without exceptions: no such section (the sample's transactions raised nothing).
    assert " === EXCEPTIONS ===" not in render_tables(sample_report())


def test_console_overview_says_what_duration_measures() -> None:
    r = sample_report()
    r["metrics_reset"] = True
    r["duration_s"] = 56.0
    overview = section(render_tables(r), "OVERVIEW")
    assert "Duration: 56.0 s (measured from the metrics reset; the whole run: 60.0 s (01:00))" in overview
    r["metrics_reset"] = False  # e.g. a report whose end came after the measured period
    assert "56.0 s (measured; the whole run: 60.0 s (01:00))" in render_tables(r)
    assert "Duration: 60.0 s (01:00)\n" in render_tables(sample_report())  # nothing to explain


def test_running_tables_say_now_not_ended() -> None:
    r = sample_report()
    r["metrics_reset"] = True
    running = section(render_tables(r, running=True), "OVERVIEW")
    assert "Now:" in running and "Ended:" not in running and "the run so far" in running
    final = section(render_tables(r), "OVERVIEW")
    assert "Ended:" in final and "Now:" not in final


def test_console_plan_dropped_and_corrected_figures() -> None:
    text = render_tables(full_report())
    overview = text.split(" === OVERVIEW ===", 1)[1]
    assert "Dropped:  0 iterations" in overview
    plan = [line for line in overview.splitlines() if line.startswith((" 1 ", " 2 ", " 3 "))]
    assert [line.split("|")[1].strip() for line in plan] == ["increase", "maintain", "decrease"]
    assert "0 -> 8" in plan[0] and "52.0 s" in plan[1]
    co = section(text, "COORDINATED OMISSION")
    assert "--co-mitigation average" in co
    row = next(line for line in co.splitlines() if line.startswith(" POST /user/login"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[1] == "40" and cells[2] == "48.2 / 61.0" and cells[4] == "106 / 180"  # avg, 95 %: raw / corrected
    assert any(line.startswith(" Aggregated ") for line in co.splitlines())
    # Old reports: none of these sections, and no Dropped line.
    old = render_tables(sample_report())
    assert "COORDINATED OMISSION" not in old and "Dropped" not in old and "increase" not in old


# ---------------------------------------------------------------- html


def test_html_ticks_are_round_on_every_axis() -> None:
    for report in (sample_report(), full_report()):
        for key, svg in charts(render_html(report)).items():
            ticks = re.findall(r'class="tick" x="[\d.]+" y="[\d.]+" text-anchor="end">([^<]+)<', svg)
            assert len(ticks) >= 3, key
            values = [float(t.replace(",", "").replace("k", "e3")) for t in ticks]
            step = values[1] - values[0]
            mantissa = step / 10 ** int(f"{step:e}".split("e")[1])
            assert round(mantissa, 6) in (1.0, 2.0, 5.0), (key, ticks)
            assert values == [round(i * step, 9) for i in range(len(values))], (key, ticks)


@pytest.mark.parametrize(("peak", "want"), [(12.0, ["0", "5", "10", "15"]), (8.0, ["0", "2", "4", "6", "8"]),
                                            (1.2, ["0", "0.5", "1.0", "1.5"])])  # fmt: skip
def test_latency_axis_labels_are_exact(peak: float, want: list[str]) -> None:
    """Every label is its tick's value (once 2.5 read "2" and 7.5 read "8")."""
    r = sample_report()
    for p in r["series"]["points"]:
        for k in ("p50_ms", "p95_ms", "p99_ms"):
            if p[k] is not None:
                p[k] = min(p[k], peak)
    latency = charts(render_html(r))["latency"]
    assert re.findall(r'class="tick" x="[\d.]+" y="[\d.]+" text-anchor="end">([^<]+)<', latency) == want


def test_top_chart_ranks_the_slowest_requests_in_distinct_colours() -> None:
    r = sample_report()
    assert slowest_rows(r) == ["POST /user/login", "GET /node/:nid", "GET /", "GET /user/login",
                               "GET /static/logo.png"]  # fmt: skip
    r["requests"][3]["count"] = 3  # too few to rank: a slow row of 3 requests is noise
    assert "POST /user/login" not in slowest_rows(r)
    chart = build_charts(full_report())[3]
    assert chart.title == "Requests per second of the 5 slowest requests (by p95)"
    assert [s.color for s in chart.series] == list(ROW_COLORS)
    assert len(set(ROW_COLORS)) == 5
    page = render_html(full_report())
    assert "5 slowest requests (by p95)" in charts(page)["rows"]


def _hex(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def test_top_colours_are_far_apart() -> None:
    rgb = [_hex(c) for c in ROW_COLORS]
    for i, a in enumerate(rgb):
        for b in rgb[i + 1 :]:
            assert sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) ** 0.5 > 120, (a, b)


def test_values_on_hover() -> None:
    page = render_html(sample_report())
    svg = charts(page)
    latency_titles = re.findall(r'<g class="hover">(.*?)</g>', svg["latency"], re.S)[0]
    titles = [unescape(t) for t in re.findall(r"<title>([^<]*)</title>", latency_titles)]
    assert len(titles) == 60  # one column per point
    first = titles[0].split("\n")
    assert first[0] == "00:01 (ramp-up)" and first[1].startswith("p50: ") and first[1].endswith(" ms")
    assert titles[30].split("\n")[0] == "00:31 (steady)"
    assert [line.split(":")[0] for line in first[1:]] == ["p50", "p95", "p99"]
    throughput = re.findall(r'<g class="hover">(.*?)</g>', svg["throughput"], re.S)[0]
    assert "requests/s: " in unescape(throughput) and "failures/s: " in unescape(throughput)


def test_hover_columns_are_bounded_on_long_runs() -> None:
    r = sample_report()
    r["series"]["points"] = [dict(r["series"]["points"][i % 60], t=float(i)) for i in range(3600)]
    hover = re.findall(r'<g class="hover">(.*?)</g>', charts(render_html(r))["users"], re.S)[0]
    assert 200 <= hover.count("<rect") <= 300


def test_html_exceptions_sizes_corrected_and_aggregated_transactions() -> None:
    page = render_html(full_report())
    exc = page.split('<section id="exceptions">', 1)[1].split("</section>", 1)[0]
    assert "KeyError: &#x27;form_build_id&#x27;" in exc and "AuthBrowsingUser: (Auth) login" in exc
    assert exc.index("form_build_id") < exc.index("TimeoutError")
    requests = page.split('<section id="requests">', 1)[1].split("</section>", 1)[0]
    assert "<th>Avg size</th>" in requests and "1.5 kB" in requests and "210 B" in requests
    assert "Corrected for coordinated omission (average)" in requests and "48.2 / 61.0" in requests
    tx = page.split('<section id="transactions">', 1)[1].split("</section>", 1)[0]
    assert "<tfoot><tr><td>Aggregated</td>" in tx
    # An old report: no size column, no corrected table, and "no exception" said plainly.
    old = render_html(without_sizes(sample_report()))
    assert "Avg size" not in old and "coordinated omission" not in old
    assert "No transaction raised an exception." in old


def test_html_plan_bands_event_markers_and_overview() -> None:
    page = render_html(full_report())
    for key, svg in charts(page).items():
        # The plan's steps replace the coarser phases as shaded bands.
        assert re.findall(r'class="band (band-[a-z-]+)"', svg) == ["band-increase", "band-maintain",
                                                                  "band-decrease"], key  # fmt: skip
        assert ">hold 8</text>" in svg
        marker = re.findall(r'<g class="marker">.*?<title>([^<]*)</title></g>', svg)
        assert marker == ["00:30 users 6 (by ops@host)"], key
        hover = unescape(re.findall(r'<g class="hover">(.*?)</g>', svg, re.S)[0])
        assert hover.count("event at 00:30: users 6 (by ops@host)") == 1, key
        assert "00:30 (hold 8)" in hover
    overview = page.split('<section id="overview">', 1)[1].split("</section>", 1)[0]
    assert "Test plan" in overview and "0 -&gt; 8" in overview
    assert "Control events" in overview and "ops@host" in overview
    assert "Dropped iterations" in overview
    old = render_html(sample_report())
    assert "Dropped iterations" not in old and 'class="marker"' not in old and "Test plan" not in old
    assert len(re.findall(r'class="band band-steady"', old)) == 4  # the phases, one per chart


def test_html_of_empty_report_still_renders() -> None:
    page = render_html(empty_report())
    assert page.count(">no data<") == 4 and 'class="hover"' not in page


# ---------------------------------------------------------------- markdown


def test_markdown_units_exceptions_and_additions() -> None:
    text = render_markdown(full_report())
    assert "| Name | 50% (ms) | 75% (ms) | 90% (ms) | 95% (ms) | 99% (ms) | 99.9% (ms) | Max (ms) |" in text
    assert "| Name | Avg (ms) | Min (ms) | Max (ms) | Median (ms) |" in text
    exc = text.split("## Exceptions", 1)[1].split("## Errors", 1)[0]
    assert "KeyError: 'form\\_build\\_id'" in exc and "| 4 |" in exc
    tx = text.split("## Per transaction metrics", 1)[1].split("## Per scenario metrics", 1)[0]
    assert tx.count("| **Aggregated** |") == 3
    assert "| **Dropped iterations** | 0 (due when no user was free) |" in text
    assert "### Test plan" in text and "| 2 | maintain | 8 -&gt; 8 |" in text
    assert "Corrected for coordinated omission (average)" in text and "| POST /user/login | 40 | 48.2 / 61.0 |" in text
    old = render_markdown(sample_report())
    assert "## Exceptions" not in old and "Dropped" not in old and "coordinated omission" not in old


# ---------------------------------------------------------------- csv


def test_csv_writes_the_file_asked_for_with_rounded_numbers(tmp_path: Path) -> None:
    r = full_report()
    r["requests"][0]["mean_ms"] = 8.123456789
    r["requests"][0]["rps"] = 34.083333333333336
    written = write_csv(r, str(tmp_path / "r.csv"))
    assert written[0] == str(tmp_path / "r.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "r-errors.csv", "r-exceptions.csv", "r-scenarios.csv", "r-series.csv", "r-transactions.csv", "r.csv"]
    with open(tmp_path / "r.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert (rows[0]["mean_ms"], rows[0]["rps"]) == ("8.123", "34.083")
    assert (rows[0]["bytes"], rows[0]["mean_bytes"]) == (str(r["requests"][0]["bytes"]), "1536.0")
    text = (tmp_path / "r.csv").read_text() + (tmp_path / "r-series.csv").read_text()
    assert not re.search(r"\d\.\d{4,}", text)  # no float past 3 decimals anywhere
    with open(tmp_path / "r-exceptions.csv", newline="", encoding="utf-8") as fh:
        exc = list(csv.DictReader(fh))
    assert [(e["transaction"], e["error"], e["count"]) for e in exc] == [
        ("(Auth) login", "KeyError: 'form_build_id'", "4"), ("(Auth) login", "TimeoutError: login page", "1")]


@pytest.mark.parametrize("report", [sample_report(), empty_report()])
def test_csv_of_old_reports_leaves_sizes_empty(tmp_path: Path, report: dict[str, Any]) -> None:
    write_csv(without_sizes(report), str(tmp_path / "old.csv"))
    with open(tmp_path / "old.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(row["bytes"] == "" and row["mean_bytes"] == "" for row in rows)
