"""Thresholds, the abort, exit codes and compare through the real CLI: standalone runs against
a real target whose ``/slow?ms=N`` sets the response time, a real gaggle (Manager and two
Workers over a real redis-server), and ``goose-redis compare`` on the reports they wrote.

The delay only ever makes a request slower, so every limit here is on the side a loaded
machine cannot cross: "p95 < 50" fails against a 60 ms target however slow the machine is.

Wall time: four standalone runs of about 2 s, three gaggles, a few dozen quick CLI calls: about 30 s.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from support import CountingTarget, ProcessTracker, run_cli
from test_gaggle import Gaggle
from test_reports_e2e import Run as ReportRun

pytestmark = pytest.mark.slow

LOAD_TEST = """
import os

from goose_redis import Scenario, Transaction, User

SLOW_MS = int(os.environ.get("TEST_SLOW_MS", "20"))


async def slow(user: User) -> None:
    await user.get(f"/slow?ms={SLOW_MS}")          # the row "GET /slow"


async def front(user: User) -> None:
    await user.get("/", name="front")


timed = Scenario("Timed").register(
    Transaction(slow, name="slow call"),
    Transaction(front, name="front call"),
)
"""
ERROR_LINE = re.compile(
    r'^Error: InvalidOption \{ option: "(?P<option>[^"]+)", value: "(?P<value>.*)", detail: ".+" \}$'
)
RUN_TIMEOUT_S = 90.0


class Run(ReportRun):
    """A finished run, with its thresholds by expression."""

    @property
    def results(self) -> dict[str, dict[str, Any]]:
        return {r["expr"]: r for r in self.report["thresholds"]}


@pytest.fixture(scope="module")
def load_test(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("verdict") / "timed.py"
    path.write_text(LOAD_TEST)
    return path


def run(
    load_test: Path,
    target: CountingTarget,
    stem: Path,
    slow_ms: int,
    *extra: str,
    env: dict[str, str] | None = None,
    quiet: bool = True,
) -> Run:
    args = ["-f", str(load_test), "--host", target.url, "-u", "4", "-r", "40", *(["-q"] if quiet else []),
            "--report-file", f"{stem}.json", "--report-file", f"{stem}.md", "--report-file", f"{stem}.html",
            "--report-file", f"{stem}.csv", *extra]  # fmt: skip
    proc = run_cli(args, env={"TEST_SLOW_MS": str(slow_ms), **(env or {})}, timeout=RUN_TIMEOUT_S)
    assert "Traceback" not in proc.stderr, proc.stderr
    return Run(proc.returncode, proc.stdout, proc.stderr, stem)


def error_line(stderr: str) -> re.Match[str]:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    m = ERROR_LINE.match(lines[0])
    assert m is not None, lines[0]
    return m


# ---------------------------------------------------------------- bad thresholds: exit 2, before any load


@pytest.mark.parametrize(
    ("args", "env", "option", "value"),
    [
        (["--threshold", "p95 <"], {}, "--threshold", "p95 <"),
        (["--threshold", "p95 < 5", "--threshold", "p97 < 5"], {}, "--threshold", "p97 < 5"),
        (["--threshold", "GET /slow: p95 < 5 parsecs"], {}, "--threshold", "GET /slow: p95 < 5 parsecs"),
        (["--threshold", "slow: p95 < 5"], {}, "--threshold", "slow: p95 < 5"),  # no such transaction
        (["--threshold", "scenario slow call: count > 1"], {}, "--threshold", "scenario slow call: count > 1"),
        ([], {"GOOSE_THRESHOLDS": "p95 < 500; front call: p95 == 3"}, "--threshold", "front call: p95 == 3"),
        ([], {"GOOSE_THRESHOLDS": "p95 < 500;;Nope: count > 1;"}, "--threshold", "Nope: count > 1"),
        (["--threshold-abort"], {}, "--threshold-abort", "true"),
        (["--threshold", "p95 < 5", "--threshold-grace", "5s"], {}, "--threshold-grace", "5s"),
        (["--threshold", "p95 < 5", "--threshold-abort", "--threshold-grace", "soon"], {}, "--threshold-grace", "soon"),
    ],
)
def test_bad_thresholds_exit_2_with_one_line_before_any_load(
    load_test: Path, target: CountingTarget, args: list[str], env: dict[str, str], option: str, value: str
) -> None:
    proc = run_cli(["-f", str(load_test), "--host", target.url, "-t", "1s", *args], env=env, timeout=60)
    assert proc.returncode == 2, proc
    m = error_line(proc.stderr)
    assert (m["option"], m["value"]) == (option, value)
    assert target.total() == 0


def test_a_worker_refuses_thresholds(load_test: Path) -> None:
    for args in (["--threshold", "p95 < 5"], ["--threshold-abort"]):
        proc = run_cli(["-f", str(load_test), "--worker", *args], timeout=60)
        assert proc.returncode == 2, proc
        assert "a Worker takes it from the Manager" in proc.stderr or "set on the Manager" in proc.stderr


# ---------------------------------------------------------------- standalone: pass, fail, rows


@pytest.fixture(scope="module")
def passing(load_test: Path, module_target: CountingTarget, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """/slow at 20 ms; every threshold holds. GOOSE_THRESHOLDS (';'-separated) gives them."""
    stem = tmp_path_factory.mktemp("pass") / "report"
    env = {"GOOSE_THRESHOLDS": "p95 < 5s; GET /slow: p50 >= 20ms ;slow call: count > 5; Timed: count > 0; "
                               "GET front: fail_pct < 1%"}  # fmt: skip
    return run(load_test, module_target, stem, 20, "-t", "2s", env=env)


@pytest.fixture(scope="module")
def failing(load_test: Path, module_target: CountingTarget, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """/slow at 60 ms: the aggregated p95 (half the requests are slow) breaks 50 ms, the fast row holds."""
    stem = tmp_path_factory.mktemp("fail") / "report"
    return run(load_test, module_target, stem, 60, "-t", "2s", "--threshold", "p95 < 50",
               "--threshold", "GET front: p95 < 50", "--threshold", "GET /nowhere: count < 1")  # fmt: skip


def test_a_passing_run_exits_0_with_its_thresholds_in_every_report(passing: Run) -> None:
    assert passing.code == 0, passing.stderr
    results = passing.results
    assert list(results) == ["p95 < 5s", "GET /slow: p50 >= 20ms", "slow call: count > 5", "Timed: count > 0",
                             "GET front: fail_pct < 1%"]  # fmt: skip
    assert all(r["passed"] for r in results.values())
    slow_p50 = results["GET /slow: p50 >= 20ms"]
    assert slow_p50["row"] == "GET /slow" and slow_p50["limit"] == 20.0
    assert slow_p50["value"] == next(r for r in passing.report["requests"] if r["name"] == "/slow")["median_ms"]
    assert results["p95 < 5s"]["limit"] == 5000.0
    assert passing.report["verdict"] == {"passed": True, "exit_code": 0, "reasons": [], "aborted": None}
    tail = passing.stdout.rsplit("=== THRESHOLDS ===", 1)[1]
    assert "=== OVERVIEW ===" in passing.stdout.split("=== THRESHOLDS ===")[0]  # the thresholds come last
    assert "Verdict: passed (exit code 0)" in tail and "FAIL" not in tail
    md = passing.stem.with_suffix(".md").read_text()
    assert "## Verdict" in md and "**Passed** (exit code 0)" in md
    assert 'class="verdict pass"' in passing.stem.with_suffix(".html").read_text()
    csv_rows = (passing.stem.parent / "report-thresholds.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + 5 and all(row.endswith(",true,") for row in csv_rows[1:])


def test_a_failing_threshold_exits_99_and_says_which(failing: Run) -> None:
    assert failing.code == 99, failing.stderr
    results = failing.results
    # The sketch is within 1 % of the true p95, which is at least the 60 ms the target sleeps.
    assert not results["p95 < 50"]["passed"] and results["p95 < 50"]["value"] >= 0.99 * 60
    assert results["GET front: p95 < 50"]["passed"]  # the row threshold: the fast row holds
    assert results["GET /nowhere: count < 1"] | {"value": None, "passed": False} == results["GET /nowhere: count < 1"]
    assert results["GET /nowhere: count < 1"]["note"] == "no such row in the results"
    verdict = failing.report["verdict"]
    assert verdict["passed"] is False and verdict["exit_code"] == 99
    assert verdict["reasons"][0].startswith('threshold "p95 < 50" failed (')
    assert verdict["reasons"][1] == 'threshold "GET /nowhere: count < 1" failed (no such row in the results)'
    tail = failing.stdout.rsplit("=== THRESHOLDS ===", 1)[1]
    assert re.search(r"p95 < 50 +\| +[\d.,]+ ms \| +FAIL", tail), tail
    assert re.search(r"GET front: p95 < 50 +\| +[\d.,]+ ms \| +pass", tail), tail
    assert "Verdict: FAILED (exit code 99)" in tail
    assert 'class="verdict fail"' in failing.stem.with_suffix(".html").read_text()


def test_the_abort_stops_the_run_early_on_a_threshold_that_cannot_recover(
    load_test: Path, module_target: CountingTarget, tmp_path: Path
) -> None:
    """-t 60s, but p95 < 10 against a 50 ms target fails at the first check after the 1 s grace.
    ``count > 1000000`` fails too, but a lower bound on a count may still be met: it never aborts."""
    r = run(load_test, module_target, tmp_path / "report", 50, "-t", "60s", "--threshold", "count > 1000000",
            "--threshold", "p95 < 10", "--threshold-abort", "--threshold-grace", "1s", quiet=False)  # fmt: skip
    assert r.code == 99, r.stderr
    report = r.report
    assert report["duration_s"] < 30, report["duration_s"]
    reason = report["verdict"]["aborted"]
    assert re.fullmatch(r'threshold "p95 < 10" failed \([\d.,]+ ms\)', reason), reason
    assert f"aborting the run: {reason}" in r.stderr
    assert f"the run was stopped early: {reason}" in r.stdout.rsplit("=== THRESHOLDS ===", 1)[1]
    assert f"the run was stopped early: {reason}" in report["verdict"]["reasons"]
    assert report["phases"][-1]["name"] == "stop"


# ---------------------------------------------------------------- compare two real runs


def test_compare_flags_the_threefold_slowdown(passing: Run, failing: Run) -> None:
    base, new = f"{passing.stem}.json", f"{failing.stem}.json"
    proc = run_cli(["compare", base, new], timeout=60)
    assert proc.returncode == 99, proc
    assert re.search(r"^ request: GET /slow .*REGRESSED: p95, p99$", proc.stdout, re.M), proc.stdout
    assert "Verdict: FAILED" in proc.stdout
    md = run_cli(["compare", base, new, "--format", "md", "--max-regression", "50%"], timeout=60)
    assert md.returncode == 99 and md.stdout.startswith("## Load test comparison: Regression")
    assert re.search(r"^\| request: GET /slow \|.*\| \*\*REGRESSED: p95, p99\*\* \|$", md.stdout, re.M), md.stdout
    doc = json.loads(run_cli(["compare", base, new, "--format", "json"], timeout=60).stdout)
    slow = next(r for r in doc["rows"] if r["label"] == "GET /slow")
    assert slow["percentiles_ms"]["95"]["rel_pct"] > 100 and slow["regressions"] == ["p95", "p99"]
    # 200 % slower passes only a tolerance above it.
    assert run_cli(["compare", base, new, "--max-regression", "100000%"], timeout=60).returncode == 0


def test_compare_passes_a_report_against_itself(passing: Run) -> None:
    path = f"{passing.stem}.json"
    proc = run_cli(["compare", path, path, "--format", "md"], timeout=60)
    assert proc.returncode == 0, proc
    assert proc.stdout.startswith("## Load test comparison: No regression")
    assert "REGRESSED" not in proc.stdout


@pytest.mark.parametrize(
    ("content", "args", "option", "detail"),
    [
        (None, [], "NEW", "cannot read the file"),
        (b"a,b\n1,2\n", [], "NEW", "not JSON"),
        (b"[1, 2]", [], "NEW", "no JSON object"),
        (b'{"schema": 2, "requests": [], "aggregated": {}}', [], "NEW", "report schema 2"),
        (b'{"tables": []}', [], "NEW", "no 'schema'"),
        (b"", ["--format", "html"], "--format", "one of text, md, json"),
        (b"", ["--max-regression", "lots"], "--max-regression", "takes a percentage"),
    ],
)
def test_compare_bad_input_exits_2_with_one_line(
    passing: Run, tmp_path: Path, content: bytes | None, args: list[str], option: str, detail: str
) -> None:
    other = tmp_path / "other.json"
    if content is not None:
        other.write_bytes(content)
    proc = run_cli(["compare", f"{passing.stem}.json", str(other), *args], timeout=60)
    assert proc.returncode == 2, proc
    m = error_line(proc.stderr)
    assert m["option"] == option and detail in proc.stderr
    assert proc.stdout == ""


# ---------------------------------------------------------------- a real gaggle


def gaggle_of(procs: ProcessTracker, redis_url: str, workdir: Path, load_test: Path) -> Gaggle:
    g = Gaggle(procs, redis_url, workdir)
    g.load_test = load_test
    return g


def run_gaggle(
    g: Gaggle, target: CountingTarget, slow_ms: int, *extra: str
) -> tuple[int, dict[str, Any], str, list[str]]:
    """Manager and two Workers; the Workers always exit 0 (they do not judge). Returns the
    Manager's exit code, its report, its output, and the Workers' logs."""
    env = {"TEST_SLOW_MS": str(slow_ms)}
    manager = g.manager(target.url, 4, 2, "-r", "40", *extra, env=env)
    workers = [g.worker(env=env), g.worker(env=env)]
    code = manager.wait(RUN_TIMEOUT_S)
    for w in workers:
        assert w.wait(30) == 0, w.output()
    assert "Traceback" not in manager.stderr.text(), manager.output()
    return code, g.report(), manager.stdout.text() + manager.stderr.text(), [w.stderr.text() for w in workers]


def test_a_gaggle_that_passes_exits_0(
    procs: ProcessTracker, redis_url: str, tmp_path: Path, load_test: Path, fresh_target: CountingTarget
) -> None:
    """Passing thresholds with --threshold-abort on: the gaggle runs its whole time and exits 0,
    and a count threshold is judged on the merged total of both Workers (what the target served)."""
    g = gaggle_of(procs, redis_url, tmp_path, load_test)
    code, report, out, _ = run_gaggle(g, fresh_target, 20, "-t", "2s", "--no-reset-metrics", "--threshold", "p95 < 5s",
                                   "--threshold", "GET /slow: count > 10", "--threshold-abort",
                                   "--threshold-grace", "0s")  # fmt: skip
    assert code == 0, out
    assert report["mode"] == "gaggle" and len(report["workers"]) == 2
    assert all(w["requests"] > 0 for w in report["workers"])
    assert [r["passed"] for r in report["thresholds"]] == [True, True]
    assert report["thresholds"][1]["value"] == fresh_target.completed("GET /slow")
    assert "stopping the gaggle: run time elapsed" in out
    assert report["verdict"] == {"passed": True, "exit_code": 0, "reasons": [], "aborted": None}


def test_a_gaggle_that_fails_exits_99(
    procs: ProcessTracker, redis_url: str, tmp_path: Path, load_test: Path, module_target: CountingTarget
) -> None:
    g = gaggle_of(procs, redis_url, tmp_path, load_test)
    code, report, out, _ = run_gaggle(g, module_target, 60, "-t", "2s", "--threshold", "GET /slow: p50 < 50",
                                   "--threshold", "GET front: p95 < 50")  # fmt: skip
    assert code == 99, out
    slow, front = report["thresholds"]
    assert not slow["passed"] and slow["value"] >= 60.0 and front["passed"]  # clamped to the row's min: >= 60
    assert "stopping the gaggle: run time elapsed" in out
    assert "Verdict: FAILED (exit code 99)" in out


def test_the_abort_stops_the_whole_gaggle(
    procs: ProcessTracker, redis_url: str, tmp_path: Path, load_test: Path, module_target: CountingTarget
) -> None:
    g = gaggle_of(procs, redis_url, tmp_path, load_test)
    code, report, out, worker_logs = run_gaggle(g, module_target, 50, "-t", "60s", "--threshold", "p95 < 10",
                                   "--threshold-abort", "--threshold-grace", "1s")  # fmt: skip
    assert code == 99, out
    reason = report["verdict"]["aborted"]
    assert re.fullmatch(r'threshold "p95 < 10" failed \([\d.,]+ ms\)', reason), reason
    assert f"stopping the gaggle: {reason}" in out
    for log in worker_logs:
        assert f"received EXIT ({reason})" in log, log
    assert report["duration_s"] < 30
