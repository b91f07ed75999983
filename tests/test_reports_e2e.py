"""Reports and live progress from real runs: the CLI against a real HTTP target, and a real
2-Worker Gaggle over a real Redis.

Every run writes all four formats at once (``--report-file`` .json .html .md .csv). The tests
check that the formats agree with each other and with the console tables, that the series
adds up to the totals (docs/reports.md, "What adds up"), that the Gaggle's series is merged
by time, and that the HTML draws in headless Chromium (screenshot: /tmp/goose-gaggle-report.png).
Live progress is checked on a pipe (plain lines), on a pseudo-terminal (one line rewritten in
place) and with ``-q``. The last tests are unit tests of the series: coarsening on long runs,
and the Manager's merge of Worker deltas that split one bucket.

Wall time: five CLI runs of 2 to 5 s each and two Chromium runs, about 30 s in all.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from support import REPO_ROOT, CountingTarget, ProcessTracker, RedisServer, cli_env, run_cli
from support.browser import chromium_binary, console_lines, drawn_charts, outside_refs, png_size, run_chromium

from goose_redis.metrics import Metrics
from goose_redis.report.csv_report import csv_paths
from goose_redis.report.fmt import fmt_ms
from goose_redis.series import MAX_BUCKETS, Series

pytestmark = pytest.mark.slow

LOAD_TEST = """
from goose_redis import Scenario, Transaction, User


async def front_page(user: User) -> None:
    await user.get("/", name="front page")


async def missing(user: User) -> None:
    await user.get("/status/404")


async def api(user: User) -> None:
    await user.get("/json")
    await user.get("/any/item?id=1", name="/any/item")


async def broken(user: User) -> None:
    await user.get("/status/500")


browse = Scenario("Browse", weight=2, wait=(0.02, 0.05)).register(
    Transaction(front_page, weight=4),
    Transaction(missing, weight=1),
)
api_user = Scenario("Api", weight=1, wait=(0.02, 0.05)).register(
    Transaction(api, weight=3),
    Transaction(broken, weight=1),
)
"""
REQUEST_KEYS = {"GET front page", "GET /status/404", "GET /json", "GET /any/item", "GET /status/500"}
PROGRESS_RE = re.compile(
    r"users (\d+)/(\d+) \| (\d\d:\d\d)(?:/(\d\d:\d\d))? \| [\d,.]+ req/s \| ([\d,]+) reqs \| ([\d,]+) fails "
    r"\([^)]*\) \| p95 (?:[\d,.]+ ms|-)(?: \| workers (\d+))?"
)
GAGGLE_SHOT = Path("/tmp/goose-gaggle-report.png")
RUN_TIMEOUT_S = 60.0


# ---------------------------------------------------------------- runs


@dataclass
class Run:
    """A finished CLI run and the reports it wrote (``stem`` + .json/.html/.md/.csv)."""

    code: int
    stdout: str
    stderr: str
    stem: Path

    @property
    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.stem.with_suffix(".json").read_text(encoding="utf-8"))
        return data

    def csv(self, family: str) -> list[dict[str, str]]:
        with open(csv_paths(str(self.stem) + ".csv")[family], newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    @property
    def markdown(self) -> str:
        return self.stem.with_suffix(".md").read_text(encoding="utf-8")

    @property
    def html(self) -> Path:
        return self.stem.with_suffix(".html")


def report_args(stem: Path) -> list[str]:
    return [arg for ext in (".json", ".html", ".md", ".csv") for arg in ("--report-file", f"{stem}{ext}")]


@pytest.fixture(scope="module")
def load_test_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("loadtest") / "two_scenarios.py"
    path.write_text(LOAD_TEST, encoding="utf-8")
    return path


def standalone(
    load_test_file: Path, target: CountingTarget, stem: Path, *extra: str, users: int, rate: int, run_time: str
) -> Run:
    args = ["-f", str(load_test_file), "--host", target.url, "-u", str(users), "-r", str(rate), "-t", run_time]
    proc = run_cli([*args, *report_args(stem), *extra], timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    return Run(proc.returncode, proc.stdout, proc.stderr, stem)


@pytest.fixture(scope="module")
def reset_run(load_test_file: Path, module_target: CountingTarget, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Standalone, default metrics reset after a 3 s ramp-up, running tables every second;
    stderr is a pipe."""
    stem = tmp_path_factory.mktemp("reset") / "report"
    return standalone(load_test_file, module_target, stem, "--running-metrics", "1", users=4, rate=1, run_time="2s")


@pytest.fixture(scope="module")
def no_reset_run(load_test_file: Path, module_target: CountingTarget, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Standalone, ``--no-reset-metrics -q``."""
    stem = tmp_path_factory.mktemp("noreset") / "report"
    return standalone(load_test_file, module_target, stem, "--no-reset-metrics", "-q", users=3, rate=3, run_time="2s")


@pytest.fixture(scope="module")
def gaggle_run(
    load_test_file: Path,
    module_target: CountingTarget,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Run]:
    """A Manager and 2 Workers as CLI processes, default reset, running tables every 2 s."""
    redis_server.resume()
    redis_server.start()
    redis_server.flushall()
    url = redis_server.url
    stem = tmp_path_factory.mktemp("gaggle") / "report"
    tracker = ProcessTracker()
    try:
        manager = tracker.start(
            [
                "-f",
                str(load_test_file),
                "--host",
                module_target.url,
                "-u",
                "4",
                "-r",
                "4",
                "-t",
                "4s",
                "--manager",
                "--expect-workers",
                "2",
                "--redis-url",
                url,
                "--running-metrics",
                "2",
                *report_args(stem),
            ]  # fmt: skip
        )
        workers = [tracker.start(["-f", str(load_test_file), "--worker", "--redis-url", url]) for _ in range(2)]
        code = manager.wait(RUN_TIMEOUT_S)
        for w in workers:
            assert w.wait(30) == 0, w.output()
        assert code == 0, manager.output()
        yield Run(code, manager.stdout.text(), manager.stderr.text(), stem)
    finally:
        tracker.kill_all()


# ---------------------------------------------------------------- parsing the text outputs


def _count(text: str) -> int:
    return int(text.split()[0].replace(",", ""))


def console_tables(stdout: str, section: str = "PER REQUEST METRICS") -> list[dict[str, list[str]]]:
    """The three (or four) tables of the *last* ``=== section ===`` block: name -> cells."""
    block = stdout.rsplit(f"=== {section} ===", 1)[1].split("\n\n", 1)[0]
    tables: list[dict[str, list[str]]] = []
    for line in block.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 2:
            continue
        if cells[0] == "Name":
            tables.append({})
        else:
            tables[-1][cells[0]] = cells[1:]
    return tables


def markdown_tables(md: str, section: str = "## Per request metrics") -> list[dict[str, list[str]]]:
    block = md.split(section, 1)[1].split("\n## ", 1)[0]
    tables: list[dict[str, list[str]]] = []
    in_table = False
    for line in block.splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not in_table:
            tables.append({})
            in_table = True
            continue
        if set(cells[0]) <= set(":-"):
            continue
        tables[-1][cells[0].strip("*")] = cells[1:]
    return tables


def schema_validator() -> Draft202012Validator:
    schema = json.loads(resources.files("goose_redis.report").joinpath("schema.json").read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def request_key(row: dict[str, Any]) -> str:
    return f"{row['method']} {row['name']}".strip()


def _num(cell: str) -> float | None:
    return None if cell == "" else float(cell)


# ---------------------------------------------------------------- shared checks


def check_formats_agree(run: Run) -> dict[str, Any]:
    """JSON (valid), CSV, Markdown and the console tables carry the same numbers."""
    rep = run.report
    errors = sorted(schema_validator().iter_errors(rep), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]
    rows = {request_key(r): r for r in rep["requests"]}
    assert set(rows) == REQUEST_KEYS
    rows["Aggregated"] = rep["aggregated"]
    agg = rep["aggregated"]
    assert agg["count"] == sum(r["count"] for r in rep["requests"]) > 20
    assert agg["fail_count"] == rows["GET /status/404"]["count"] + rows["GET /status/500"]["count"] > 0
    assert rows["GET /status/404"]["status_codes"] == {"404": rows["GET /status/404"]["count"]}

    # CSV: the same figures, rounded to 3 decimals; the requests table is the .csv asked for.
    assert csv_paths(str(run.stem) + ".csv")["requests"] == str(run.stem) + ".csv"
    csv_rows = {f"{r['method']} {r['name']}".strip(): r for r in run.csv("requests")}
    assert set(csv_rows) == set(rows)
    for key, r in rows.items():
        c = csv_rows[key]
        assert (int(c["count"]), int(c["fail_count"])) == (r["count"], r["fail_count"]), key
        for field in ("fail_pct", "rps", "fail_ps", "mean_ms", "min_ms", "max_ms", "median_ms"):
            assert _num(c[field]) == round(r[field], 3), (key, field)
        for p, v in r["percentiles_ms"].items():
            assert _num(c[f"p{p}_ms"]) == round(v, 3), (key, p)
    for family in ("transactions", "scenarios"):
        assert [(c["name"], int(c["count"]), int(c["fail_count"])) for c in run.csv(family)] == [
            (r["name"], r["count"], r["fail_count"]) for r in rep[family]
        ]
    assert [(c["name"], c["error"], int(c["count"])) for c in run.csv("errors")] == [
        (e["name"], e["error"], e["count"]) for e in rep["errors"]
    ]

    # Console: the final PER REQUEST METRICS tables (counts, then percentiles and max).
    counts, _timings, pcts, *_ = console_tables(run.stdout)
    assert set(counts) == set(rows)
    for key, r in rows.items():
        assert (_count(counts[key][0]), _count(counts[key][1])) == (r["count"], r["fail_count"]), key
        want = [fmt_ms(r["percentiles_ms"][p]) for p in ("50", "75", "90", "95", "99", "99.9")]
        assert pcts[key] == [*want, fmt_ms(r["max_ms"])], key
    scenario_counts = console_tables(run.stdout, "PER SCENARIO METRICS")[0]
    assert {k.split(": ", 1)[1]: _count(v[1]) for k, v in scenario_counts.items()} == {
        s["name"]: s["count"] for s in rep["scenarios"]
    }

    # Markdown: the same rows with the same counts and percentiles.
    md_counts, _md_timings, md_pcts = markdown_tables(run.markdown)[:3]
    assert set(md_counts) == set(rows)
    for key, r in rows.items():
        assert (_count(md_counts[key][0]), _count(md_counts[key][1])) == (r["count"], r["fail_count"]), key
        assert md_pcts[key] == pcts[key], key
    return rep


def check_series(run: Run) -> dict[str, Any]:
    """What adds up in the series (docs/reports.md), in the JSON and in the series CSV."""
    rep = run.report
    series, agg = rep["series"], rep["aggregated"]
    points = series["points"]
    interval = series["interval_s"]
    assert interval == 1
    # Evenly spaced from 0, one point per bucket: merged by time, never negative.
    assert [p["t"] for p in points] == [float(i * interval) for i in range(len(points))]
    started = time_of(rep["started_at"])
    assert series["started_at"] <= started < series["started_at"] + interval
    assert len(points) <= rep["duration_s"] + sum(p["duration_s"] for p in rep["phases"][:1]) + 3
    assert sum(p["measured_requests"] for p in points) == agg["count"]
    assert sum(p["measured_failures"] for p in points) == agg["fail_count"]
    for p in points:
        assert 0 <= p["measured_requests"] <= p["requests"]
        assert 0 <= p["measured_failures"] <= p["failures"]
        assert p["requests"] == sum(n for n, _ in p["rows"].values())
        assert p["failures"] == sum(f for _, f in p["rows"].values())
    assert max(p["users"] for p in points) == rep["users"]
    if not rep["metrics_reset"]:
        # Nothing was discarded: the series itself sums to the totals, row by row too.
        assert all(p["measured_requests"] == p["requests"] for p in points)
        for r in rep["requests"]:
            key = request_key(r)
            assert sum(p["rows"].get(key, [0, 0])[0] for p in points) == r["count"], key
            assert sum(p["rows"].get(key, [0, 0])[1] for p in points) == r["fail_count"], key
    else:
        # The ramp-up is charted but not measured: buckets that ended well before the
        # reset (2 s: a request started then has long completed) are not measured at all.
        reset_t = time_of(rep["phases"][1]["started_at"]) - series["started_at"]
        assert rep["phases"][1]["name"] == "steady"
        for p in points:
            if p["t"] + interval <= reset_t - 2:
                assert p["measured_requests"] == 0, p
            if p["t"] >= reset_t + 1:  # (a Worker resets a few ms after the Manager's mark)
                assert p["measured_requests"] == p["requests"], p
        assert sum(p["requests"] for p in points) > agg["count"]

    # The series CSV: the aggregated rows are the points, per-request rows their "rows".
    csv_points = [r for r in run.csv("series") if r["name"] == "Aggregated"]
    assert [(float(r["t"]), int(r["users"]), int(r["requests"]), int(r["failures"])) for r in csv_points] == [
        (p["t"], p["users"], p["requests"], p["failures"]) for p in points
    ]
    assert [(int(r["measured_requests"]), int(r["measured_failures"])) for r in csv_points] == [
        (p["measured_requests"], p["measured_failures"]) for p in points
    ]
    assert [_num(r["p95_ms"]) for r in csv_points] == [
        None if p["p95_ms"] is None else round(p["p95_ms"], 3) for p in points
    ]
    per_row = [r for r in run.csv("series") if r["name"] != "Aggregated"]
    assert len(per_row) == sum(len(p["rows"]) for p in points)
    return rep


def time_of(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def progress_lines(stderr: str) -> list[re.Match[str]]:
    return [m for m in (PROGRESS_RE.fullmatch(line) for line in stderr.splitlines()) if m is not None]


# ---------------------------------------------------------------- standalone


def test_standalone_formats_agree(reset_run: Run) -> None:
    rep = check_formats_agree(reset_run)
    assert rep["mode"] == "standalone" and rep["workers"] == [] and rep["metrics_reset"] is True
    assert [p["name"] for p in rep["phases"]] == ["ramp-up", "steady", "stop"]
    # Ramp-up tables came first, and show the ramp-up phase only.
    ramp = reset_run.stdout.split("=== RAMP-UP METRICS ===", 1)[1].split("=== RUNNING METRICS", 1)[0]
    overview = ramp.split("=== OVERVIEW ===", 1)[1]
    assert "ramp-up" in overview and "steady" not in overview


def test_standalone_series_with_reset(reset_run: Run) -> None:
    check_series(reset_run)


def test_standalone_series_without_reset(no_reset_run: Run) -> None:
    rep = check_series(no_reset_run)
    assert rep["metrics_reset"] is False
    check_formats_agree(no_reset_run)


def test_plain_progress_on_a_pipe(reset_run: Run) -> None:
    """stderr is a pipe: plain lines, no carriage returns or escapes; the first line at the
    start and one last line with the final figures (the throttle holds lines for 10 s)."""
    assert "\r" not in reset_run.stderr and "\x1b" not in reset_run.stderr
    lines = progress_lines(reset_run.stderr)
    assert len(lines) >= 2, reset_run.stderr
    first, last = lines[0], lines[-1]
    assert first.group(2) == last.group(2) == "4" and first.group(3) == "00:00"
    assert last.group(4) == "00:05"  # planned: the 3 s ramp-up + 2 s run time
    # The last line counts what the tables count.
    agg = reset_run.report["aggregated"]
    assert (_count(last.group(5)), _count(last.group(6))) == (agg["count"], agg["fail_count"])
    assert last.group(7) is None  # no workers outside a gaggle


def test_running_metrics_standalone(reset_run: Run) -> None:
    headings = re.findall(r"=== RUNNING METRICS \((\d+)s\) ===", reset_run.stdout)
    assert len(headings) >= 2, reset_run.stdout[:2000]
    after = reset_run.stdout.split("=== RUNNING METRICS", 1)[1]
    assert "=== PER REQUEST METRICS ===" in after.split("=== RUNNING METRICS", 1)[0]
    # Intermediate tables, then the final ones last.
    assert reset_run.stdout.rindex("=== RUNNING METRICS") < reset_run.stdout.rindex("=== OVERVIEW ===")
    # A snapshot says "Now", not "Ended", and has no "stop" phase while the run goes on.
    for block in reset_run.stdout.split("=== RUNNING METRICS")[1:]:
        overview = block.split("=== OVERVIEW ===", 1)[1].split("===", 1)[0]
        assert "Now:" in overview and "Ended:" not in overview, overview
        assert not re.search(r"^ stop ", overview, re.M), overview
    final = reset_run.stdout.rsplit("=== OVERVIEW ===", 1)[1]
    assert "Ended:" in final and re.search(r"^ stop ", final, re.M)


def test_quiet_silences_progress(no_reset_run: Run) -> None:
    assert progress_lines(no_reset_run.stderr) == []
    assert "users " not in no_reset_run.stderr and "wrote report" not in no_reset_run.stderr
    assert "=== PER REQUEST METRICS ===" in no_reset_run.stdout  # the tables are still printed


def _read_pty(fd: int, sink: bytearray) -> None:
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: every slave end closed
            return
        if not data:
            return
        sink.extend(data)


def screen_lines(raw: str) -> list[str]:
    """What a terminal shows for ``raw``: ``\\r`` returns to column 0, ``ESC[K`` erases to the end."""
    shown = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        buf: list[str] = []
        col = 0
        for part in re.split(r"(\r|\x1b\[K)", line):
            if part == "\r":
                col = 0
            elif part == "\x1b[K":
                del buf[col:]
            else:
                for ch in part:
                    if col < len(buf):
                        buf[col] = ch
                    else:
                        buf.append(ch)
                    col += 1
        shown.append("".join(buf))
    return shown


def test_progress_rewritten_in_place_on_a_terminal(
    load_test_file: Path, module_target: CountingTarget, tmp_path: Path
) -> None:
    master, slave = pty.openpty()
    # A terminal wide enough for the whole line (cutting is tested in test_progress.py);
    # COLUMNS, which pytest-xdist's workers may set, would override it.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    env = {k: v for k, v in cli_env().items() if k != "COLUMNS"}
    args = ["-f", str(load_test_file), "--host", module_target.url, "-u", "3", "-r", "3", "-t", "2s"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "goose_redis", *args],
        cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
        start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    raw = bytearray()
    reader = threading.Thread(target=_read_pty, args=(master, raw), daemon=True)
    reader.start()
    try:
        stdout, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert proc.returncode == 0
    text = raw.decode("utf-8", "replace")
    rewrites = re.findall(r"\r(users [^\r\n\x1b]*)\x1b\[K", text)
    assert len(rewrites) >= 3, repr(text)
    assert [r for r in rewrites if not PROGRESS_RE.fullmatch(r)] == [], rewrites
    assert any(r.startswith("users 3/3 ") for r in rewrites)
    # The line is left on screen with the final figures, then the cursor moves on.
    final = PROGRESS_RE.fullmatch(rewrites[-1])
    assert final is not None and text.rstrip("\r\n").endswith(rewrites[-1] + "\x1b[K")
    totals = console_tables(stdout.decode())[0]["Aggregated"]
    assert (_count(final.group(5)), _count(final.group(6))) == (_count(totals[0]), _count(totals[1]))
    # A log line (the metrics reset) starts on a clean line, never after the progress text.
    shown = screen_lines(text)
    reset_lines = [s for s in shown if "metrics reset" in s]
    assert len(reset_lines) == 1 and re.match(r"\d\d:\d\d:\d\d NOTICE", reset_lines[0]), shown
    assert "req/s" not in reset_lines[0]


# ---------------------------------------------------------------- gaggle


def test_gaggle_formats_agree(gaggle_run: Run) -> None:
    rep = check_formats_agree(gaggle_run)
    assert rep["mode"] == "gaggle" and rep["metrics_reset"] is True
    assert [w["index"] for w in rep["workers"]] == [1, 2]
    assert [w["users"] for w in rep["workers"]] == [2, 2]
    assert all(w["requests"] > 0 for w in rep["workers"])
    assert [p["name"] for p in rep["phases"]] == ["ramp-up", "steady", "stop"]


def test_gaggle_series_merged_by_time(gaggle_run: Run) -> None:
    rep = check_series(gaggle_run)
    points = rep["series"]["points"]
    # Both Workers' users add up in the same buckets (4 = 2 + 2), never counted twice.
    assert max(p["users"] for p in points) == 4 == sum(w["users"] for w in rep["workers"])
    # Everything each Worker sent is in the series (ramp-up included), once.
    assert sum(p["requests"] for p in points) == sum(w["all_requests"] for w in rep["workers"])
    assert sum(w["requests"] for w in rep["workers"]) == rep["aggregated"]["count"]
    assert sum(p["failures"] for p in points) == sum(w["all_failures"] for w in rep["workers"])
    assert sum(w["failures"] for w in rep["workers"]) == rep["aggregated"]["fail_count"]


def test_gaggle_progress_and_running_metrics(gaggle_run: Run) -> None:
    lines = progress_lines(gaggle_run.stderr)
    assert len(lines) >= 2, gaggle_run.stderr
    assert all(m.group(7) == "2" and m.group(2) == "4" for m in lines)
    last = lines[-1]
    agg = gaggle_run.report["aggregated"]
    assert (_count(last.group(5)), _count(last.group(6))) == (agg["count"], agg["fail_count"])
    headings = re.findall(r"=== RUNNING METRICS \((\d+)s\) ===", gaggle_run.stdout)
    assert len(headings) >= 1, gaggle_run.stdout[:2000]
    assert "=== PER REQUEST METRICS ===" in gaggle_run.stdout.split("=== RUNNING METRICS", 1)[1]


def test_gaggle_ramp_up_tables_show_the_workers_ramp_up(gaggle_run: Run) -> None:
    """The RAMP-UP section's per-worker table counts the ramp-up, like the tables above it."""
    ramp = gaggle_run.stdout.split("=== RAMP-UP METRICS ===", 1)[1].split("=== OVERVIEW ===", 1)
    ramp_total = _count(console_tables(ramp[0] + "\n\n")[0]["Aggregated"][0])
    workers = [line.split("|") for line in ramp[1].split("\n\n", 1)[0].splitlines() if re.match(r" \d: ", line)]
    assert len(workers) == 2, ramp[1]
    assert sum(_count(w[3]) for w in workers) == ramp_total > 0
    rep = gaggle_run.report
    assert sum(w["all_requests"] - w["requests"] for w in rep["workers"]) == ramp_total


@pytest.mark.skipif(chromium_binary() is None, reason="chromium not installed (apt-get install -y chromium)")
def test_gaggle_html_in_chromium(gaggle_run: Run, tmp_path: Path) -> None:
    page = gaggle_run.html
    proc, charts = drawn_charts(tmp_path, page.as_uri())
    dom = proc.stdout
    for chart in charts:
        assert "no data" not in chart.body, chart.key
        # Elapsed time from 00:00 on: no negative tick.
        ticks = re.findall(r'class="tick"[^>]*>([^<]+)<', chart.body)
        assert "00:00" in ticks and not any(t.startswith("-") for t in ticks), (chart.key, ticks)
        # The phases are shaded, the steady one wide enough to be labelled.
        assert re.search(r'class="band band-steady"', chart.body), chart.key
        assert ">steady</text>" in chart.body, chart.key
    users = charts[0]
    assert len(re.findall(r'<text class="tick" x="[\d.]+" y="[\d.]+" text-anchor="end">4</text>', users.body)) == 1
    assert outside_refs(dom) == []
    assert "Workers" in dom and "Aggregated" in dom
    assert console_lines(proc.stderr, page) == []

    shot = tmp_path / "gaggle.png"
    proc = run_chromium(tmp_path, page.as_uri(), f"--screenshot={shot}", "--window-size=1280,2400",
                        "--hide-scrollbars")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = shot.read_bytes()
    assert png_size(data) == (1280, 2400) and len(data) > 50_000
    assert console_lines(proc.stderr, page) == []
    shutil.copyfile(shot, GAGGLE_SHOT)


# ---------------------------------------------------------------- the series, unit


def test_series_coarsens_past_an_hour_with_totals_kept() -> None:
    s = Series()
    t0 = 1_800_000_000.0
    requests = failures = 0
    for sec in range(7300):  # two requests a second, every 7th fails; users ramp to 50
        t = t0 + sec
        s.set_users(t + 0.1, min(50, 1 + sec // 10))
        for half in (0.2, 0.7):
            ok = (requests % 7) != 0
            s.record(t + half, "GET /a" if half < 0.5 else "POST /b", 1.0 + sec % 40, ok)
            requests += 1
            failures += not ok
        if sec == MAX_BUCKETS:  # the 3601st bucket: the first doubling
            assert s.interval_s == 2 and len(s.buckets) <= MAX_BUCKETS
    assert s.interval_s == 4  # 7300 s / 2 s is again more than 3600 buckets
    assert len(s.buckets) <= MAX_BUCKETS
    assert all(key % 4 == 0 for key in s.buckets)
    assert sum(b.requests for b in s.buckets.values()) == requests
    assert sum(b.failures for b in s.buckets.values()) == failures
    assert sum(int(b.sketch.count) for b in s.buckets.values()) == requests
    assert sum(b.rows["GET /a"][0] for b in s.buckets.values()) == 7300
    points = s.points(t0)
    assert [p["t"] for p in points] == [float(4 * i) for i in range(len(points))]
    assert points[0]["rps"] == points[0]["requests"] / 4 == 2.0
    assert sum(p["measured_requests"] for p in points) == requests
    assert max(p["users"] for p in points) == 50 and points[0]["users"] == 1
    # The wire form stays bounded too.
    assert Series.from_wire(s.to_wire()).to_wire() == s.to_wire()


def _worker_delta(records: list[tuple[float, bool]], users: list[tuple[float, int]]) -> Metrics:
    """A Worker's delta as the Manager receives it: through the wire form."""
    m = Metrics()
    for t, ok in records:
        m.request_row("GET", "/").record(2.0, ok, 200 if ok else 500)
        m.series.record(t, "GET /", 2.0, ok)
    for t, n in users:
        m.series.set_users(t, n)
    return Metrics.from_wire(json.loads(json.dumps(m.to_wire())))


def test_manager_merges_worker_deltas_by_time() -> None:
    """One bucket split across two deltas of Worker A (users not double-counted), Worker B
    in the same bucket (users add up), deltas merged in any order."""
    k = 1_800_000_100
    a1 = _worker_delta([(k + 0.1, True), (k + 0.4, False)], [(k + 0.2, 3)])
    a2 = _worker_delta([(k + 0.6, True), (k + 1.5, True)], [(k + 0.7, 3), (k + 1.6, 2)])
    b1 = _worker_delta([(k + 0.3, True)], [(k + 0.5, 2), (k + 1.2, 2)])
    for order in ([(a1, "a"), (a2, "a"), (b1, "b")], [(b1, "b"), (a2, "a"), (a1, "a")]):
        manager = Series()
        for delta, source in order:
            manager.merge(delta.series, source=source)
        points = manager.points(float(k))
        assert [(p["t"], p["users"], p["requests"], p["failures"]) for p in points] == [
            (0.0, 5, 4, 1),  # A's 3 once + B's 2; A's two halves of the bucket add up
            (1.0, 4, 1, 0),  # A down to 2, B still 2
        ]
    # A coarsened Manager series takes 1 s deltas into its 2 s buckets.
    coarse = Series(interval_s=2)
    for delta, source in ((a1, "a"), (a2, "a"), (b1, "b")):
        coarse.merge(delta.series, source=source)
    assert [(p["t"], p["users"], p["requests"]) for p in coarse.points(float(k))] == [(0.0, 5, 5)]


def test_ramp_delta_is_charted_but_not_measured() -> None:
    """The Manager marks a Worker's ramp-up delta as discarded: charted, not in the rows."""
    k = 1_800_000_200
    ramp = _worker_delta([(k + 0.2, True), (k + 0.4, False)], [(k + 0.1, 1)])
    steady = _worker_delta([(k + 0.8, True), (k + 1.3, True)], [(k + 0.9, 2)])
    manager = Series()
    ramp.series.discard_all()
    for delta in (ramp, steady):
        manager.merge(delta.series, source="a")
    points = manager.points(float(k))
    assert [(p["requests"], p["measured_requests"], p["failures"], p["measured_failures"]) for p in points] == [
        (3, 1, 1, 0),
        (1, 1, 0, 0),
    ]
    assert [p["requests"] for p in manager.points(float(k), measured_all=True)] == [3, 1]
    assert [p["measured_requests"] for p in manager.points(float(k), measured_all=True)] == [3, 1]
