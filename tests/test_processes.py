"""``--processes N``: one host's users in N processes, one exact report (procgroup.py, procchild.py).

The real CLI in subprocesses against a real target that counts what it serves; every request
carries ``x-user`` (the gaggle-wide user index) and ``x-pid`` (the sending process), so the
target tells which process ran which user. Gaggles meet on a real redis-server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import CliProcess, CountingTarget, ProcessTracker, run_cli
from support.procs import REPO_ROOT, cli_env
from test_gaggle import sent_requests, wait_until
from test_shaping_e2e import LOAD_TEST, check_plan_run, rate_between

pytestmark = pytest.mark.slow


@pytest.fixture
def target() -> Iterator[CountingTarget]:
    with CountingTarget(recent_limit=100_000) as t:
        yield t


def write(tmp_path: Path, wait: tuple[float, float] | None = (0.02, 0.02), name: str = "lt.py") -> Path:
    path = tmp_path / name
    path.write_text(LOAD_TEST.format(wait=wait))
    return path


def report_of(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def users_by_pid(target: CountingTarget) -> dict[int, set[int]]:
    by_pid: dict[int, set[int]] = {}
    for s in sent_requests(target):
        by_pid.setdefault(s.pid, set()).add(s.user)
    return by_pid


def child_pids(run: CliProcess, count: int) -> list[int]:
    return [int(run.stderr.wait_for_match(rf"process {j} of {count} started \(pid (\d+)\)", 60).group(1))
            for j in range(1, count + 1)]  # fmt: skip


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_processes_split_the_users_and_merge_exactly(
    procs: ProcessTracker, tmp_path: Path, target: CountingTarget
) -> None:
    out = tmp_path / "report.json"
    run = procs.start(["-f", str(write(tmp_path)), "--host", target.url, "-u", "7", "-r", "100", "-t", "3s",
                       "--processes", "2", "--no-reset-metrics", "--report-file", str(out), "-v"])  # fmt: skip
    pids = child_pids(run, 2)
    assert run.wait(60) == 0, run.output()
    report = report_of(out)
    assert report["aggregated"]["count"] == target.completed_total() == target.total() > 0
    by_pid = users_by_pid(target)
    assert by_pid == {pids[0]: {0, 2, 4, 6}, pids[1]: {1, 3, 5}}  # process j runs users j, j + 2, ...
    assert run.pid not in by_pid  # the parent runs no users
    assert report["mode"] == "standalone" and report["users"] == 7 and report["workers"] == []
    assert max(p["users"] for p in report["series"]["points"]) == 7  # the processes' users add up
    assert sum(p["requests"] for p in report["series"]["points"]) == target.completed_total()
    assert report["integrity"]["complete"] is True
    assert run.stdout.text().count("=== PER REQUEST METRICS ===") == 1  # one report, not one per process
    assert not any(alive(pid) for pid in pids)


def test_three_processes_keep_the_metrics_reset_exact_and_write_a_log_each(
    procs: ProcessTracker, tmp_path: Path, target: CountingTarget
) -> None:
    """With Goose's reset: the ramp-up rows leave the totals, the series still holds them; each
    process writes its own request log (PATH, PATH.2, PATH.3), every line whole."""
    out, request_log = tmp_path / "report.json", tmp_path / "requests.jsonl"
    run = procs.start(["-f", str(write(tmp_path)), "--host", target.url, "-u", "7", "-r", "5", "-t", "3s",
                       "--processes", "3", "-R", str(request_log), "--report-file", str(out), "-v"])  # fmt: skip
    pids = child_pids(run, 3)
    assert run.wait(60) == 0, run.output()
    report = report_of(out)
    points = report["series"]["points"]
    served = target.completed_total()
    assert sum(p["requests"] for p in points) == served  # ramp-up and steady phase
    assert sum(p["measured_requests"] for p in points) == report["aggregated"]["count"]  # after the reset
    assert 0 < report["aggregated"]["count"] < served and report["metrics_reset"] is True
    assert "=== RAMP-UP METRICS ===" in run.stdout.text()
    assert users_by_pid(target) == {pids[0]: {0, 3, 6}, pids[1]: {1, 4}, pids[2]: {2, 5}}
    files = [request_log, tmp_path / "requests.jsonl.2", tmp_path / "requests.jsonl.3"]
    lines = [[json.loads(line) for line in f.read_text().splitlines()] for f in files]
    assert sum(len(x) for x in lines) == served
    assert [sorted({e["user"] for e in x}) for x in lines] == [[0, 3, 6], [1, 4], [2, 5]]


def test_a_test_plan_and_the_throttle_hold_across_processes(tmp_path: Path, target: CountingTarget) -> None:
    out = tmp_path / "report.json"
    done = run_cli(["-f", str(write(tmp_path)), "--host", target.url, "--test-plan", "4,2s;4,3s;0,2s",
                    "--processes", "2", "--report-file", str(out), "-q"], timeout=90)  # fmt: skip
    assert done.returncode == 0, done.stderr
    check_plan_run(report_of(out), target)  # launches oldest first, stops newest first, exact totals
    assert len(users_by_pid(target)) == 2

    target.reset()
    out.unlink()
    done = run_cli(["-f", str(write(tmp_path, None)), "--host", target.url, "-u", "8", "-r", "100", "-t", "6s",
                    "--throttle-requests", "40", "--processes", "2", "--no-reset-metrics", "--report-file", str(out),
                    "-q"], timeout=90)  # fmt: skip
    assert done.returncode == 0, done.stderr
    sent = sorted(s.at for s in sent_requests(target))
    rate = rate_between(sent, sent[0] + 1.0, sent[-1] - 0.5)
    assert 36 <= rate <= 44, rate  # 40/s for the whole group, not 40/s per process
    assert report_of(out)["aggregated"]["count"] == target.completed_total()
    assert len(users_by_pid(target)) == 2


def test_auto_is_one_process_per_usable_core(tmp_path: Path, target: CountingTarget) -> None:
    cores = len(os.sched_getaffinity(0))
    out = tmp_path / "report.json"
    done = run_cli(["-f", str(write(tmp_path)), "--host", target.url, "-u", str(2 * cores), "-r", "100", "-t", "2s",
                    "--no-reset-metrics", "--report-file", str(out), "-q"], env={"GOOSE_PROCESSES": "auto"},
                   timeout=90)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(users_by_pid(target)) == cores
    assert report_of(out)["aggregated"]["count"] == target.completed_total()


def test_a_program_that_runs_itself_and_the_demo_load_their_test_in_each_process(
    tmp_path: Path, target: CountingTarget
) -> None:
    program = tmp_path / "self_run.py"
    program.write_text(runnable(LOAD_TEST.format(wait=(0.02, 0.02))) + '\nif __name__ == "__main__":\n    main()\n')
    out = tmp_path / "report.json"
    args = ["--host", target.url, "-u", "4", "-r", "100", "-t", "2s", "--processes", "2", "--no-reset-metrics",
            "--report-file", str(out), "-q"]  # fmt: skip
    done = _run_program(program, args)
    assert done.returncode == 0, done.stderr
    assert report_of(out)["aggregated"]["count"] == target.completed_total() > 0
    assert len(users_by_pid(target)) == 2

    target.reset()  # a program that calls main() unguarded: in a child, that call does nothing
    program.write_text(runnable(LOAD_TEST.format(wait=(0.02, 0.02))) + "\nmain()\n")
    done = _run_program(program, args)
    assert done.returncode == 0, done.stderr
    assert report_of(out)["aggregated"]["count"] == target.completed_total() > 0
    assert len(users_by_pid(target)) == 2 and "Traceback" not in done.stderr

    demo = run_cli(["demo", "-u", "4", "-t", "3s", "--processes", "2", "--report-file", str(out), "-q"], timeout=90)
    assert demo.returncode == 0, demo.stderr
    assert report_of(out)["aggregated"]["count"] > 0


def test_a_program_whose_main_runs_other_scenarios_is_refused_by_its_processes(
    tmp_path: Path, target: CountingTarget
) -> None:
    program = tmp_path / "odd.py"
    program.write_text(runnable(LOAD_TEST.format(wait=None)) + (
        '\nother = Scenario("Other").register(Transaction(page, name="other"))\n\n'
        'if __name__ == "__main__":\n    main([shaped])\n'
    ))  # fmt: skip
    done = _run_program(program, ["--host", target.url, "-u", "2", "-t", "1s", "--processes", "2"])
    assert done.returncode == 1, done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "could not start" in error[0] and "different load test" in error[0], done.stderr
    assert target.total() == 0


def runnable(load_test: str) -> str:
    """The load test as its own program (it imports ``main`` too)."""
    return load_test.replace("Transaction, User\n", "Transaction, User, main\n")


def _run_program(program: Path, args: list[str]) -> Any:
    import subprocess

    return subprocess.run([sys.executable, str(program), *args], cwd=REPO_ROOT, env=cli_env(), capture_output=True,
                          text=True, timeout=90)  # fmt: skip


def test_a_worker_with_two_processes_in_a_gaggle_of_two(
    procs: ProcessTracker, redis_url: str, tmp_path: Path, target: CountingTarget
) -> None:
    """Four engines in all: Worker k of 2, process j of 2 runs users k + 2j, k + 2j + 4, ..."""
    load_test, out = write(tmp_path), tmp_path / "report.json"
    manager = procs.start(["-f", str(load_test), "--manager", "--expect-workers", "2", "--host", target.url,
                           "--redis-url", redis_url, "-u", "8", "-r", "100", "-t", "3s", "--no-reset-metrics",
                           "--report-file", str(out), "-v"])  # fmt: skip
    manager.stderr.wait_for("waiting for 2 workers", 20)
    crew = [procs.start(["-f", str(load_test), "--worker", "--redis-url", redis_url, "--processes", "2", "-v"])
            for _ in range(2)]  # fmt: skip
    assert manager.wait(90) == 0, manager.output()
    for w in crew:
        assert w.wait(30) == 0, w.output()
    report = report_of(out)
    assert report["aggregated"]["count"] == target.completed_total() > 0
    assert sum(w["requests"] for w in report["workers"]) == report["aggregated"]["count"]
    assert len(report["workers"]) == 2  # one Worker per host, whatever its processes
    assert sorted(sorted(u) for u in users_by_pid(target).values()) == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert max(p["users"] for p in report["series"]["points"]) == 8


def test_a_worker_with_two_processes_takes_over_a_lost_workers_users(
    procs: ProcessTracker, redis_url: str, tmp_path: Path, target: CountingTarget
) -> None:
    """A new shape reaches a Worker's processes: when the other Worker is lost, the Manager
    re-splits, and the two processes of the one left run all six users between them."""
    load_test, out = write(tmp_path), tmp_path / "report.json"
    manager = procs.start(["-f", str(load_test), "--manager", "--expect-workers", "2", "--host", target.url,
                           "--redis-url", redis_url, "-u", "6", "-r", "100", "-t", "60s", "--report-file", str(out),
                           "-v"])  # fmt: skip
    manager.stderr.wait_for("waiting for 2 workers", 20)
    multi = procs.start(["-f", str(load_test), "--worker", "--redis-url", redis_url, "--processes", "2", "-v"])
    single = procs.start(["-f", str(load_test), "--worker", "--redis-url", redis_url, "-v"])
    pids = child_pids(multi, 2)  # a Worker starts its processes with the run
    target.wait_for_hits(100, timeout=30)
    single.signal_group(signal.SIGKILL)
    single.wait(10)
    manager.stderr.wait_for("users re-split over 1 worker", 30)
    resplit = time.time()
    wait_until(lambda: time.time() > resplit + 2.0, 10, "2 s after the re-split")
    later: dict[int, set[int]] = {}
    for s in sent_requests(target):
        if s.at > resplit + 1.0:
            later.setdefault(s.pid, set()).add(s.user)
    assert later == {pids[0]: {0, 2, 4}, pids[1]: {1, 3, 5}}, later
    manager.send_signal(signal.SIGINT)
    assert manager.wait(40) == 3, manager.output()  # the lost Worker's last deltas are missing
    assert multi.wait(30) == 0, multi.output()


def test_a_process_killed_is_reported_and_the_others_go_on(
    procs: ProcessTracker, tmp_path: Path, target: CountingTarget
) -> None:
    out = tmp_path / "report.json"
    run = procs.start(["-f", str(write(tmp_path)), "--host", target.url, "-u", "6", "-r", "100", "-t", "6s",
                       "--processes", "2", "--no-reset-metrics", "--report-file", str(out), "-v"])  # fmt: skip
    pids = child_pids(run, 2)
    # Long enough for a few of its deltas (one every half second) to have reached the parent.
    wait_until(lambda: sum(1 for s in sent_requests(target) if s.pid == pids[1]) >= 250, 30, "process 2's load")
    os.kill(pids[1], signal.SIGKILL)
    killed_at = time.time()
    run.stderr.wait_for(rf"process 2 of 2 \(pid {pids[1]}\) ended without its final metrics \(killed by signal 9\)",
                        10)  # fmt: skip
    assert run.wait(60) == 3, run.output()  # finished, totals known incomplete
    report = report_of(out)
    assert report["integrity"]["complete"] is False
    assert any(f"pid {pids[1]}" in p for p in report["integrity"]["problems"])
    sent = sent_requests(target)
    survivor = sum(1 for s in sent if s.pid == pids[0])
    assert any(s.pid == pids[0] and s.at > killed_at + 1.0 for s in sent)  # the other process went on
    # The survivor's totals are exact; of the killed one's, what it had sent before it died.
    merged_of_killed = report["aggregated"]["count"] - survivor
    assert 0 < merged_of_killed <= target.completed_total() - survivor


def test_ctrl_c_stops_every_process_cleanly_and_a_second_ends_them_at_once(
    procs: ProcessTracker, tmp_path: Path, target: CountingTarget
) -> None:
    out = tmp_path / "report.json"
    args = ["-f", str(write(tmp_path)), "--host", target.url, "-u", "4", "-r", "100", "-t", "60s", "--processes",
            "2", "--no-reset-metrics", "--report-file", str(out), "-v"]  # fmt: skip
    run = procs.start(args)
    pids = child_pids(run, 2)
    target.wait_for_hits(100, timeout=30)
    run.signal_group(signal.SIGINT)  # as a terminal's Ctrl-C: the parent and its children
    assert run.wait(30) == 0, run.output()
    assert report_of(out)["aggregated"]["count"] == target.completed_total()
    assert not any(alive(pid) for pid in pids)

    target.reset()
    run = procs.start(args)
    pids = child_pids(run, 2)
    target.wait_for_hits(100, timeout=30)
    run.signal_group(signal.SIGINT)
    run.stderr.wait_for("stopping gracefully", 10)
    run.signal_group(signal.SIGINT)
    assert run.wait(30) == 130, run.output()
    wait_until(lambda: not any(alive(pid) for pid in pids), 5, "the children to exit with their parent")


@pytest.mark.parametrize("value", ["0", "-1", "x", "1000", ""])
def test_bad_process_counts_are_refused(tmp_path: Path, target: CountingTarget, value: str) -> None:
    done = run_cli(["-f", str(write(tmp_path)), "--host", target.url, "--processes", value], timeout=30)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('Error: InvalidOption { option: "--processes"'), done.stderr
    assert target.total() == 0


def test_processes_on_a_manager_and_clashing_log_files_are_refused(tmp_path: Path, target: CountingTarget) -> None:
    lt = write(tmp_path)
    done = run_cli(["-f", str(lt), "--manager", "--expect-workers", "1", "--host", target.url, "--processes", "2"])
    assert done.returncode == 2
    assert re.fullmatch(r'Error: InvalidOption \{ option: "--processes", value: "2", detail: "The Manager runs no '
                        r'users.*" \}\n', done.stderr), done.stderr  # fmt: skip
    (tmp_path / "req.log.2").mkdir()  # the second process's request log would be a directory
    done = run_cli(["-f", str(lt), "--host", target.url, "--processes", "2", "-R", str(tmp_path / "req.log")])
    assert done.returncode == 2 and "req.log.2" in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
