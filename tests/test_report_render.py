"""The renderers of the report dict: console, Markdown, CSV, HTML, JSON, and the schema."""

from __future__ import annotations

import csv
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from support.report_samples import empty_report, sample_report

from goose_redis.errors import InvalidOption
from goose_redis.report.console import render_tables
from goose_redis.report.csv_report import csv_paths, write_csv
from goose_redis.report.fmt import fmt_ms, fmt_pct
from goose_redis.report.html import render_html
from goose_redis.report.markdown import render_markdown
from goose_redis.report.svg import fmt_tick, nice_step, time_step
from goose_redis.report.writers import report_format, write_reports

SECTIONS = [
    " === PER SCENARIO METRICS ===",
    " === PER TRANSACTION METRICS ===",
    " === PER REQUEST METRICS ===",
    " === ERRORS ===",
    " === OVERVIEW ===",
]


def schema_validator() -> Draft202012Validator:
    text = resources.files("goose_redis.report").joinpath("schema.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def hostile_report() -> dict[str, Any]:
    """The sample with markup in every kind of name, to prove it is escaped."""
    r = sample_report()
    evil = '<script>alert("x")</script>&<b>'
    r["host"] = "http://h/" + evil
    r["requests"][0]["name"] = "/" + evil
    r["transactions"][0]["name"] = evil
    r["transactions"][0]["scenario"] = evil
    r["scenarios"][0]["name"] = evil
    r["errors"][0]["error"] = evil
    r["workers"][0]["id"] = evil
    r["series"]["points"][5]["rows"][evil] = [3, 1]
    return r


# ---------------------------------------------------------------- schema


def test_sample_and_empty_reports_match_the_schema() -> None:
    v = schema_validator()
    for report in (sample_report(), empty_report()):
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in v.iter_errors(report)]
        assert errors == []


def test_schema_rejects_a_broken_report() -> None:
    v = schema_validator()
    r = sample_report()
    del r["aggregated"]
    r["requests"][0]["percentiles_ms"] = {"50": 1.0}  # all six or none
    r["series"]["points"][0]["rows"]["GET /"] = [1]
    messages = [e.message for e in v.iter_errors(r)]
    assert any("'aggregated' is a required property" in m for m in messages)
    assert len(messages) >= 3


def test_sample_is_consistent() -> None:
    r = sample_report()
    assert len(r["scenarios"]) == 2 and len(r["transactions"]) == 4 and len(r["requests"]) == 5
    assert len(r["series"]["points"]) == 60 and len(r["workers"]) == 2
    assert r["aggregated"]["count"] == sum(x["count"] for x in r["requests"])
    assert r["aggregated"]["count"] == sum(p["requests"] for p in r["series"]["points"])


# ---------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "-"), (0.0, "0.00"), (9.994, "9.99"), (12.34, "12.3"), (99.94, "99.9"), (123.4, "123"),
     (12345.6, "12,346")],
)
def test_fmt_ms(value: float | None, text: str) -> None:
    assert fmt_ms(value) == text


def test_fmt_pct() -> None:
    assert [fmt_pct(p) for p in (0, 0.0625, 4.87, 100)] == ["0%", "0.06%", "4.9%", "100%"]


# ---------------------------------------------------------------- console


def test_console_has_every_section_and_the_aggregated_row() -> None:
    r = sample_report()
    text = render_tables(r)
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    agg = f"{r['aggregated']['count']:,}"
    agg_lines = [line for line in text.splitlines() if line.startswith(" Aggregated ")]
    assert len(agg_lines) == 4  # counts, times, percentiles, status codes
    assert agg in agg_lines[0] and "29 (0.60%)" in agg_lines[0]
    assert "0 [6], 200 [4,767], 302 [2], 404 [23]" in agg_lines[3]
    # Transactions grouped under their scenario, Goose-style.
    assert " 1: AnonBrowsingUser\n   1: (Anon) front page " in text
    assert " 2: AuthBrowsingUser\n   1: (Auth) login " in text
    assert "GET /static/logo.png" in text and "200 [449], 404 [23]" in text
    assert "Cannot connect to host 127.0.0.1:8080 [Connection refused]" in text
    # Overview with the per-worker table.
    assert "gaggle (2 workers)" in text and "1: worker-a1b2c3" in text and "loadgen-2" in text
    assert "Duration: 60.0 s (01:00)" in text


def test_console_tables_are_aligned() -> None:
    text = render_tables(sample_report())
    for section in text.split(" === ")[1:]:
        lines = section.splitlines()[1:]
        rules = {len(line) for line in lines if set(line.strip()) == {"-"}}
        assert len(rules) <= 1, section  # every rule in a section has one length
        headers = [line for line in lines if line.startswith(" Name ")]
        bars = {line.index("|") for line in headers}
        assert len(bars) <= 1  # the name column has one width


def test_console_truncates_long_names_and_handles_empty() -> None:
    r = sample_report()
    r["requests"][0]["name"] = "/" + "x" * 200
    text = render_tables(r)
    assert "x" * 200 not in text and "xxx..." in text
    empty = render_tables(empty_report())
    assert "No requests were made." in empty and " === OVERVIEW ===" in empty
    assert " === ERRORS ===" not in empty


# ---------------------------------------------------------------- markdown


def _md_tables(text: str) -> list[list[list[str]]]:
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
            current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def test_markdown_tables_have_consistent_columns() -> None:
    r = hostile_report()
    text = render_markdown(r)
    tables = _md_tables(text)
    assert len(tables) >= 12
    for table in tables:
        widths = {len(row) for row in table}
        assert len(widths) == 1, table
        assert all(re.fullmatch(r"\s*:?-{3}:?\s*", c) for c in table[1])
    for heading in ("## Overview", "## Per request metrics", "## Per transaction metrics",
                    "## Per scenario metrics", "## Errors", "### Workers", "### Phases"):
        assert heading in text
    assert "| **Aggregated** | 4,798 | 29 (0.60%) |" in text
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_markdown_of_empty_report() -> None:
    text = render_markdown(empty_report())
    assert "No requests were made." in text
    for table in _md_tables(text):
        assert len({len(row) for row in table}) == 1


# ---------------------------------------------------------------- csv


def _read_csv(path: str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _num(cell: str) -> float | None:
    return None if cell == "" else float(cell)


def test_csv_paths_follow_the_naming_rule() -> None:
    # The file asked for holds the requests table; the others sit beside it.
    assert csv_paths("out/run.csv") == {
        "requests": "out/run.csv", "transactions": "out/run-transactions.csv",
        "scenarios": "out/run-scenarios.csv", "series": "out/run-series.csv", "errors": "out/run-errors.csv",
        "exceptions": "out/run-exceptions.csv",
    }
    assert csv_paths("run.CSV")["series"] == "run-series.csv"
    assert csv_paths("run")["errors"] == "run-errors.csv"


def test_csv_numbers_equal_the_report(tmp_path: Path) -> None:
    r = sample_report()
    written = write_csv(r, str(tmp_path / "out.csv"))
    assert [Path(p).name for p in written] == [
        "out.csv", "out-transactions.csv", "out-scenarios.csv", "out-series.csv", "out-errors.csv",
        "out-exceptions.csv"]

    rows = _read_csv(written[0])
    assert [row["name"] for row in rows] == [x["name"] for x in r["requests"]] + ["Aggregated"]
    for row, src in zip(rows, [*r["requests"], r["aggregated"]], strict=True):
        assert row["method"] == src["method"]
        for key in ("count", "fail_count", "fail_pct", "rps", "fail_ps", "mean_ms", "min_ms", "max_ms", "median_ms"):
            assert _num(row[key]) == round(src[key], 3), key
        for key, value in src["percentiles_ms"].items():
            assert _num(row[f"p{key}_ms"]) == round(value, 3)
        codes = dict(pair.split(":") for pair in row["status_codes"].split(";"))
        assert {k: int(v) for k, v in codes.items()} == src["status_codes"]
    assert rows[-1]["status_codes"] == "0:6;200:4767;302:2;404:23"

    tx = _read_csv(written[1])
    assert [(t["name"], t["scenario"]) for t in tx] == [(x["name"], x["scenario"]) for x in r["transactions"]]
    assert [int(t["count"]) for t in tx] == [x["count"] for x in r["transactions"]]

    sc = _read_csv(written[2])
    assert [(s["name"], int(s["users"]), _num(s["mean_ms"])) for s in sc] == [
        (x["name"], x["users"], round(x["mean_ms"], 3)) for x in r["scenarios"]]

    series = _read_csv(written[3])
    points = r["series"]["points"]
    assert len(series) == 60 * 6
    agg = [s for s in series if s["name"] == "Aggregated"]
    assert [(_num(s["t"]), int(s["users"]), int(s["requests"]), _num(s["p95_ms"])) for s in agg] == [
        (p["t"], p["users"], p["requests"], p["p95_ms"]) for p in points]
    per_row = [s for s in series if s["name"] == "GET /static/logo.png"]
    assert [[int(s["requests"]), int(s["failures"])] for s in per_row] == [
        p["rows"]["GET /static/logo.png"] for p in points]

    errors = _read_csv(written[4])
    assert [(e["method"], e["name"], e["error"], int(e["count"])) for e in errors] == [
        (e["method"], e["name"], e["error"], e["count"]) for e in r["errors"]]


def test_csv_of_empty_report(tmp_path: Path) -> None:
    written = write_csv(empty_report(), str(tmp_path / "e.csv"))
    assert len(written) == 6
    rows = _read_csv(written[0])
    assert len(rows) == 1 and rows[0]["name"] == "Aggregated" and rows[0]["mean_ms"] == ""
    assert _read_csv(written[3]) == []


# ---------------------------------------------------------------- html


SVG_RE = re.compile(r'<svg class="chart" data-chart="([a-z]+)".*?</svg>', re.S)
PATH_RE = re.compile(r'<path class="line" d="(M[^"]+)"')


def test_html_has_one_svg_per_chart_with_paths() -> None:
    page = render_html(sample_report())
    charts = dict((m.group(1), m.group(0)) for m in SVG_RE.finditer(page))
    assert list(charts) == ["users", "throughput", "latency", "rows"]
    expected_lines = {"users": 1, "throughput": 2, "latency": 3, "rows": 5}
    for key, svg in charts.items():
        paths = PATH_RE.findall(svg)
        assert len(paths) >= expected_lines[key], key
        assert all(d.count("L") >= 10 for d in paths)
        assert "no data" not in svg
        assert 'class="tick"' in svg and "legend-item" in svg and 'class="chart-title"' in svg
        assert svg.count('class="band ') == 3  # ramp-up, steady, stop
    assert ">ramp-up<" in page and ">steady<" in page


def test_html_is_self_contained() -> None:
    page = render_html(sample_report())
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*(?:[a-z]+:)?//""", page, re.I)
    assert "<script" not in page and "@import" not in page and "url(" not in page
    assert "<link" not in page
    for text in ("Per request metrics", "Per transaction metrics", "Per scenario metrics", "Errors",
                 "worker-d4e5f6", "loadgen-1", "404 Not Found", "4,798", "1: AnonBrowsingUser",
                 "(Auth) front page", "99.9%"):
        assert text in page


def test_html_escapes_every_report_string() -> None:
    page = render_html(hostile_report())
    assert "<script>" not in page and "<b>" not in page
    assert page.count("&lt;script&gt;") >= 7


def test_html_of_empty_report_says_no_data() -> None:
    page = render_html(empty_report())
    charts = SVG_RE.findall(page)
    assert len(charts) == 4
    assert page.count(">no data<") == 4
    assert "No requests were made." in page


# ---------------------------------------------------------------- writers


@pytest.mark.parametrize(
    ("path", "fmt"),
    [("r.json", "json"), ("a/r.HTML", "html"), ("r.htm", "html"), ("r.md", "md"), ("r.markdown", "md"),
     ("r.csv", "csv")],
)
def test_report_format(path: str, fmt: str) -> None:
    assert report_format(path) == fmt


def test_unknown_format_is_an_invalid_option(tmp_path: Path) -> None:
    with pytest.raises(InvalidOption) as exc:
        report_format("report.txt")
    assert str(exc.value) == (
        'InvalidOption { option: "--report-file", value: "report.txt", '
        'detail: "unknown report format: use .json, .html, .md or .csv" }'
    )
    good = tmp_path / "ok.json"
    with pytest.raises(InvalidOption):
        write_reports(sample_report(), [str(good), str(tmp_path / "bad.txt")])
    assert not good.exists()  # checked before anything is written


def test_write_reports_writes_every_format(tmp_path: Path) -> None:
    r = sample_report()
    paths = [str(tmp_path / n) for n in ("r.json", "r.html", "r.md", "sub/r.csv")]
    written = write_reports(r, paths)
    assert written[:3] == paths[:3] and len(written) == 9
    assert written[3] == paths[3]  # r.csv itself: the file asked for exists
    raw = (tmp_path / "r.json").read_bytes()
    assert orjson.loads(raw) == r
    assert raw.startswith(b'{\n  "schema": 1,\n  "version"')  # two-space indent, the dict's key order
    assert list(orjson.loads(raw)) == list(r)
    assert (tmp_path / "r.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert (tmp_path / "r.md").read_text(encoding="utf-8").startswith("# goose-redis load test report")
    assert (tmp_path / "sub" / "r-series.csv").exists()


def test_write_reports_of_empty_report(tmp_path: Path) -> None:
    paths = [str(tmp_path / n) for n in ("e.json", "e.html", "e.md", "e.csv")]
    assert len(write_reports(empty_report(), paths)) == 9
    assert schema_validator().is_valid(orjson.loads((tmp_path / "e.json").read_bytes()))


def test_chart_axes_on_a_long_run() -> None:
    r = sample_report()
    # A coarsened 2 h series whose first bucket starts before the series origin.
    r["series"]["interval_s"] = 2
    r["series"]["points"] = [
        {"t": float(i * 2 - 4), "users": 500, "requests": 24000, "failures": 2, "rps": 12000.0, "fail_ps": 1.0,
         "p50_ms": 3.0, "p95_ms": 9.0, "p99_ms": None if i % 100 == 0 else 15.0, "rows": {"GET /": [24000, 2]}}
        for i in range(3600)
    ]
    page = render_html(r)
    svg = dict((m.group(1), m.group(0)) for m in SVG_RE.finditer(page))["throughput"]
    ticks = re.findall(r'class="tick"[^>]*>([^<]+)<', svg)
    assert ticks[:4] == ["0", "5k", "10k", "15k"]
    assert ticks[4:] == ["00:00", "15:00", "30:00", "45:00", "1:00:00", "1:15:00", "1:30:00", "1:45:00"]
    latency = dict((m.group(1), m.group(0)) for m in SVG_RE.finditer(page))["latency"]
    assert len(PATH_RE.findall(latency)) == 2 + 36  # p99 is broken at each missing value


def test_svg_steps() -> None:
    # 1-2-5 steps only: every tick a round number.
    assert [nice_step(s) for s in (0.3, 8, 10, 12.5, 100, 125, 12000)] == [0.1, 2, 2, 5, 20, 50, 5000]
    assert [time_step(s) for s in (7, 59, 600, 7200)] == [1.0, 10.0, 120.0, 900.0]
    assert fmt_tick(0.25, 0.05) == "0.25" and fmt_tick(1500, 500) == "1,500" and fmt_tick(0, 500, True) == "0"
