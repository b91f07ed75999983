"""Load shaping end to end: test plans, the gaggle-wide throttle, the open model and
coordinated-omission mitigation, on one process and on a real gaggle (a real
redis-server, the real CLI in subprocesses, a real target that counts what it serves).

Every request carries ``x-user`` (the gaggle-wide user index), ``x-pid`` and
``x-sent`` (the sender's clock), so the target can tell who sent what, and when.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import CliProcess, CountingTarget, ProcessTracker, run_cli
from test_gaggle import sent_requests, wait_until

pytestmark = pytest.mark.slow

LOAD_TEST = '''\
import os
import time

from goose_redis import Scenario, Transaction, User


def _headers(user: User) -> dict[str, str]:
    return {{"x-user": str(user.index), "x-pid": str(os.getpid()), "x-sent": repr(time.time())}}


async def page(user: User) -> None:
    await user.get("/any/page", name="page", headers=_headers(user))


async def bye(user: User) -> None:
    await user.get("/any/bye", name="bye", headers=_headers(user))


shaped = Scenario("Shaped", wait={wait!r}).register(
    Transaction(page, name="page"),
    Transaction(bye, name="bye", on_stop=True),
)
'''

SLOW_TEST = '''\
from goose_redis import Scenario, Transaction, User


async def slow(user: User) -> None:
    await user.get("/slow?ms={ms}", name="slow")


open_model = Scenario("Open").register(Transaction(slow, name="slow"))
'''

STALL_TEST = '''\
from goose_redis import Scenario, Transaction, User


async def page(user: User) -> None:
    n = user.session_data.get("n", 0)
    user.session_data["n"] = n + 1
    # The target stalls on every 10th request of each user: {stall} ms instead of 5.
    ms = {stall} if n % 10 == 9 else 5
    await user.get(f"/slow?ms={{ms}}", name="page")


# A 100 ms pause per pass: a steady pass takes about 105 ms, so only a real stall doubles it.
steady = Scenario("Steady", wait=(0.1, 0.1)).register(Transaction(page, name="page"))
'''


@pytest.fixture
def target() -> Iterator[CountingTarget]:
    """A private target that remembers every request (the plan tests read them all)."""
    with CountingTarget(recent_limit=100_000) as t:
        yield t


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def report_of(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def users_series(report: dict[str, Any]) -> list[tuple[float, int]]:
    return [(float(p["t"]), int(p["users"])) for p in report["series"]["points"]]


def check_plan_run(report: dict[str, Any], target: CountingTarget) -> None:
    """A "0 -> 4 over 2 s, hold 3 s, 4 -> 0 over 2 s" plan, as the report and the target saw it."""
    # Totals equal what the target served (no metrics reset with a plan: the whole run counts).
    assert report["metrics_reset"] is False
    assert report["aggregated"]["count"] == target.completed_total() == target.total()
    # The plan table: up, hold, down.
    assert [(s["action"], s["from"], s["to"]) for s in report["plan"]] == [
        ("increase", 0, 4), ("maintain", 4, 4), ("decrease", 4, 0),
    ]  # fmt: skip
    assert report["test_plan"] == "4,2s;4,3s;0,2s"
    # The users series follows it: at most 4, all 4 during the hold, fewer at both ends.
    series = users_series(report)
    assert max(u for _, u in series) == 4
    hold = [u for t, u in series if 2.5 <= t <= 4.0]
    assert hold and all(u == 4 for u in hold), series
    assert series[0][1] <= 2 and series[-1][1] <= 1, series
    # Users start oldest first and stop newest first, each running on_stop once.
    sent = sent_requests(target)
    first_seen = {}
    for s in sent:
        first_seen.setdefault(s.user, s.at)
    assert sorted(first_seen, key=lambda u: first_seen[u]) == [0, 1, 2, 3]
    byes = [s.user for s in sent if s.path == "/any/bye"]
    assert byes == [3, 2, 1, 0], byes
    assert report["dropped_iterations"] == 0


def test_a_test_plan_on_one_process(tmp_path: Path, target: CountingTarget) -> None:
    load_test = write(tmp_path, "lt.py", LOAD_TEST.format(wait=(0.02, 0.02)))
    out = tmp_path / "report.json"
    done = run_cli(["-f", str(load_test), "--host", target.url, "--test-plan", "4,2s;4,3s;0,2s",
                    "--report-file", str(out), "-q"], timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    check_plan_run(report_of(out), target)
    assert "Increasing" in done.stdout or "increase" in done.stdout.lower()  # the plan in the console overview


def start_gaggle(
    procs: ProcessTracker, tmp_path: Path, load_test: Path, redis_url: str, target: CountingTarget, *args: str,
    workers: int = 2,
) -> tuple[CliProcess, list[CliProcess], Path]:  # fmt: skip
    out = tmp_path / "report.json"
    manager = procs.start(["-f", str(load_test), "--manager", "--expect-workers", str(workers), "--host", target.url,
                           "--redis-url", redis_url, "--report-file", str(out), "-v", *args])  # fmt: skip
    manager.stderr.wait_for(f"waiting for {workers} workers", 20)
    crew = [procs.start(["-f", str(load_test), "--worker", "--redis-url", redis_url, "-v"]) for _ in range(workers)]
    return manager, crew, out


def test_a_test_plan_on_a_gaggle_of_two(
    procs: ProcessTracker, redis_url: str, tmp_path: Path, target: CountingTarget
) -> None:
    load_test = write(tmp_path, "lt.py", LOAD_TEST.format(wait=(0.02, 0.02)))
    manager, crew, out = start_gaggle(procs, tmp_path, load_test, redis_url, target, "--test-plan", "4,2s;4,3s;0,2s")
    assert manager.wait(60) == 0, manager.output()
    for w in crew:
        assert w.wait(20) == 0, w.output()
    report = report_of(out)
    check_plan_run(report, target)
    # Users alternate between the Workers: each ran two of the four.
    by_pid: dict[int, set[int]] = {}
    for s in sent_requests(target):
        by_pid.setdefault(s.pid, set()).add(s.user)
    assert sorted(sorted(u) for u in by_pid.values()) == [[0, 2], [1, 3]]
    assert sum(w["requests"] for w in report["workers"]) == report["aggregated"]["count"]


def rate_between(sent_at: list[float], lo: float, hi: float) -> float:
    return sum(1 for t in sent_at if lo <= t < hi) / (hi - lo)


def test_the_throttle_holds_gaggle_wide_and_after_a_worker_is_killed(
    procs: ProcessTracker, redis_url: str, tmp_path: Path, target: CountingTarget
) -> None:
    """40 requests/s across 2 Workers (20 each), by the target's count; kill -9 one Worker:
    once the Manager notices, the other takes the whole 40/s."""
    load_test = write(tmp_path, "lt.py", LOAD_TEST.format(wait=None))
    manager, crew, out = start_gaggle(procs, tmp_path, load_test, redis_url, target,
                                      "-u", "8", "-r", "100", "-t", "60s", "--throttle-requests", "40")  # fmt: skip
    manager.stderr.wait_for("gaggle distributed load test started", 20)
    target.wait_for_hits(40 * 5, timeout=20)  # about 5 s of throttled load
    started = time.time()
    sent = [s.at for s in sent_requests(target)]
    before = rate_between(sent, min(sent) + 1.0, started - 0.5)
    assert 36 <= before <= 44, before  # within 10 % of 40/s

    victim = crew[1]
    victim.signal_group(signal.SIGKILL)
    victim.wait(10)
    mark = manager.stderr.mark()
    manager.stderr.wait_for("users re-split over 1 worker", 20, since=mark)
    resplit = time.time()
    wait_until(lambda: time.time() > resplit + 7.0, 10, "7 s after the re-split")
    after_sent = [s.at for s in sent_requests(target)]
    after = rate_between(after_sent, resplit + 1.5, time.time() - 0.5)
    assert 36 <= after <= 44, after  # the survivor took up the whole 40/s

    manager.send_signal(signal.SIGINT)
    assert manager.wait(40) == 3, manager.output()  # it knows the killed Worker's last deltas are missing
    assert crew[0].wait(20) == 0, crew[0].output()
    report = report_of(out)
    assert report["throttle_requests"] == 40.0
    assert report["integrity"]["complete"] is False


def test_the_arrival_rate_holds_whatever_the_response_times(tmp_path: Path, target: CountingTarget) -> None:
    """30 iterations/s against a 100 ms target with enough users: 180 in 6 s, none dropped."""
    load_test = write(tmp_path, "slow.py", SLOW_TEST.format(ms=100))
    out = tmp_path / "report.json"
    done = run_cli(["-f", str(load_test), "--host", target.url, "--arrival-rate", "30", "-u", "10", "-t", "6s",
                    "--report-file", str(out), "-q"], timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = report_of(out)
    served = target.completed_total()
    assert report["aggregated"]["count"] == served
    assert 0.9 * 180 <= served <= 1.1 * 180, served
    assert report["dropped_iterations"] == 0
    assert report["arrival_rate"] == "30"
    assert report["scenarios"][0]["count"] == served  # one request per iteration


def test_the_open_model_counts_dropped_iterations_when_users_run_short(
    procs: ProcessTracker, redis_url: str, tmp_path: Path, target: CountingTarget
) -> None:
    """30/s on 2 Workers with 2 users in all against a 200 ms target: each user manages about
    5 iterations a second, so about two thirds of the iterations are dropped and counted."""
    load_test = write(tmp_path, "slow.py", SLOW_TEST.format(ms=200))
    manager, crew, out = start_gaggle(procs, tmp_path, load_test, redis_url, target,
                                      "--arrival-rate", "30", "-u", "2", "-t", "5s")  # fmt: skip
    assert manager.wait(60) == 0, manager.output()
    for w in crew:
        assert w.wait(20) == 0, w.output()
    report = report_of(out)
    served = target.completed_total()
    dropped = report["dropped_iterations"]
    assert report["aggregated"]["count"] == served
    assert dropped > 50, dropped
    # Every iteration that came due either ran or was dropped (the last ones may be cut by the stop).
    assert 0.85 * 150 <= served + dropped <= 1.1 * 150, (served, dropped)
    assert "dropped" in manager.stdout.text().lower()


@pytest.mark.parametrize("stall_ms", [800, 5])
def test_co_mitigation_backfills_only_when_the_target_stalls(
    tmp_path: Path, target: CountingTarget, stall_ms: int
) -> None:
    load_test = write(tmp_path, "stall.py", STALL_TEST.format(stall=stall_ms))
    out = tmp_path / "report.json"
    done = run_cli(["-f", str(load_test), "--host", target.url, "-u", "2", "-r", "10", "-t", "4s",
                    "--co-mitigation", "average", "--report-file", str(out), "-q"], timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = report_of(out)
    row = next(r for r in report["requests"] if r["name"] == "page")
    co = row["co"]
    assert co is not None and report["co_mitigation"] == "average"
    if stall_ms > 5:
        assert co["synthetic"] > 0
        assert co["count"] == row["count"] + co["synthetic"]
        # The backfill fills the gap under the stalls: the corrected figures are heavier.
        assert co["percentiles_ms"]["75"] > row["percentiles_ms"]["75"] and co["mean_ms"] > row["mean_ms"]
        assert report["aggregated"]["co"]["synthetic"] == co["synthetic"]
    else:
        assert co["synthetic"] == 0 and co["count"] == row["count"]
    assert re.search(r"COORDINATED OMISSION", done.stdout)


def test_co_mitigation_merges_across_a_gaggle(
    procs: ProcessTracker, redis_url: str, tmp_path: Path, target: CountingTarget
) -> None:
    load_test = write(tmp_path, "stall.py", STALL_TEST.format(stall=600))
    manager, crew, out = start_gaggle(procs, tmp_path, load_test, redis_url, target,
                                      "-u", "2", "-r", "10", "-t", "4s", "--co-mitigation", "maximum",
                                      "--no-reset-metrics")  # fmt: skip
    assert manager.wait(60) == 0, manager.output()
    for w in crew:
        assert w.wait(20) == 0, w.output()
    report = report_of(out)
    row = next(r for r in report["requests"] if r["name"] == "page")
    assert row["co"]["synthetic"] > 0
    assert report["aggregated"]["count"] == target.completed_total()


def test_shaping_options_reach_a_worker_only_from_its_manager(tmp_path: Path) -> None:
    load_test = write(tmp_path, "lt.py", LOAD_TEST.format(wait=None))
    for args in (["--test-plan", "4,1s"], ["--throttle-requests", "5"], ["--arrival-rate", "5"],
                 ["--co-mitigation", "average"]):  # fmt: skip
        done = run_cli(["-f", str(load_test), "--worker", *args], timeout=30)
        assert done.returncode == 2, done.stderr
        assert "is set on the Manager" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_shaping_options_read_their_environment_variables(tmp_path: Path, target: CountingTarget) -> None:
    load_test = write(tmp_path, "lt.py", LOAD_TEST.format(wait=(0.02, 0.02)))
    out = tmp_path / "report.json"
    env = {"GOOSE_TEST_PLAN": "2,1s;2,1s", "GOOSE_THROTTLE_REQUESTS": "20", "GOOSE_CO_MITIGATION": "minimum"}
    done = run_cli(["-f", str(load_test), "--host", target.url, "--report-file", str(out), "-q"], env=env)
    assert done.returncode == 0, done.stderr
    report = report_of(out)
    assert report["test_plan"] == "2,1s;2,1s" and report["throttle_requests"] == 20.0
    assert report["co_mitigation"] == "minimum"
    assert report["aggregated"]["count"] <= 20 * 3  # 2 s of plan at most 20/s (plus on_stop)
    bad = run_cli(["-f", str(load_test), "--host", target.url], env={"GOOSE_ARRIVAL_RATE": "nan"})
    assert bad.returncode == 2 and '"--arrival-rate"' in bad.stderr


def test_sigint_during_a_plan_stops_cleanly(procs: ProcessTracker, tmp_path: Path, target: CountingTarget) -> None:
    load_test = write(tmp_path, "lt.py", LOAD_TEST.format(wait=(0.02, 0.02)))
    out = tmp_path / "report.json"
    run = procs.start(["-f", str(load_test), "--host", target.url, "--test-plan", "3,1s;3,60s", "--report-file",
                       str(out)])  # fmt: skip
    target.wait_for_hits(300, timeout=20)  # past the 1 s ramp-up
    os.kill(run.pid, signal.SIGINT)
    assert run.wait(30) == 0, run.output()
    report = report_of(out)
    assert report["aggregated"]["count"] == target.completed_total()
    assert [s["action"] for s in report["plan"]] == ["increase", "maintain"]
    assert report["plan"][-1]["duration_s"] < 50  # the hold as far as it got
