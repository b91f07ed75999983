"""Stalls: a Worker, the Manager or Redis frozen (SIGSTOP) and resumed; Redis restarted at an
unlucky moment; the stream trimmed while the run lasts. Silence is judged only over time a
process could observe, so a stall of its own or of Redis is nobody's silence.

Real redis-server, real CLI processes, a real counting target (helpers in test_gaggle.py).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from support import CountingTarget, ProcessTracker, RedisServer
from test_gaggle import Gaggle, aggregated, finish, wait_until, worker_id, worker_index
from test_gaggle_faults import acked, assert_exact_per_worker
from test_gaggle_junk_keys import no_fault_seen

pytestmark = pytest.mark.slow


@pytest.fixture
def gaggle(procs: ProcessTracker, redis_url: str, tmp_path: Path) -> Gaggle:
    return Gaggle(procs, redis_url, tmp_path / "gaggle")


def frozen(pid: int, seconds: float) -> None:
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)  # the fault itself: a stall of this length
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_worker_frozen_for_12s_is_lost_then_taken_back_and_nothing_is_counted_twice(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    """The Manager saw 12 s of silence: the Worker is lost and its users move. The Worker was
    frozen and saw nothing: its Manager did not go away. Resumed, it is back, and its deltas
    (merged late) make the totals exact."""
    manager = gaggle.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "60s", "--no-reset-metrics")
    workers = [gaggle.worker(), gaggle.worker()]
    by_index = {worker_index(w): w for w in workers}
    ids = [worker_id(w) for w in workers]
    wait_until(lambda: all(acked(redis_server, gaggle, wid) >= 1 for wid in ids), 20, "merged deltas")
    frozen(by_index[2].pid, 12)
    manager.stderr.wait_for(r"worker 2 \(\S+\) lost", 5)
    manager.stderr.wait_for(r"worker 2 \(\S+\) is back", 10)
    by_index[2].stderr.wait_for(r"users re-split over 2 worker\(s\): 2 of 4 users are ours", 10)
    assert "manager went away" not in by_index[2].stderr.text()
    manager.send_signal(signal.SIGINT)
    finish(manager, workers, timeout=45)
    report = gaggle.report()
    assert report["integrity"]["complete"] is True
    assert_exact_per_worker(report, workers, fresh_target)


def test_redis_frozen_for_8s_twice_loses_no_worker_and_no_request(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    """Two 8 s freezes of Redis, the second just as the Workers send a delta: nobody can read
    anything, so nobody is silent. No Worker is lost, no Worker thinks its Manager went
    away, and every request is counted once."""
    manager = gaggle.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "60s", "--no-reset-metrics")
    workers = [gaggle.worker(), gaggle.worker()]
    ids = [worker_id(w) for w in workers]
    wait_until(lambda: all(acked(redis_server, gaggle, wid) >= 1 for wid in ids), 20, "merged deltas")
    r = redis_server.client()

    def acks() -> list[int]:
        return [acked(redis_server, gaggle, wid) for wid in ids]

    for unlucky in (False, True):
        if unlucky:  # the second freeze lands as a delta arrives: the stream just grew
            length = r.xlen(gaggle.key("metrics"))
            wait_until(lambda n=length: r.xlen(gaggle.key("metrics")) != n, 10, "a delta", interval=0.01)
        before = acks()
        redis_server.pause()
        time.sleep(8)
        redis_server.resume()
        wait_until(lambda b=before: all(a >= n + 2 for a, n in zip(acks(), b, strict=True)), 30,  # type: ignore[misc]
                   "deltas merged after the freeze")  # fmt: skip
    manager.send_signal(signal.SIGINT)
    finish(manager, workers, timeout=60)
    no_fault_seen(manager, workers)
    report = gaggle.report()
    assert report["integrity"]["complete"] is True
    assert aggregated(report) == fresh_target.completed_total() == fresh_target.total()


def test_a_manager_frozen_for_7s_takes_up_its_run_again(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    """Under the Workers' 10 s grace: they carry on (and keep their deltas until acknowledged),
    the Manager wakes, reads what they sent, ends the run on time with exact totals."""
    manager = gaggle.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "14s", "--no-reset-metrics")
    workers = [gaggle.worker(), gaggle.worker()]
    ids = [worker_id(w) for w in workers]
    wait_until(lambda: all(acked(redis_server, gaggle, wid) >= 1 for wid in ids), 20, "merged deltas")
    so_far = fresh_target.total()
    manager_pid = manager.pid
    os.kill(manager_pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        fresh_target.wait_for_hits(so_far + 200, timeout=7)  # the load goes on without it
        time.sleep(max(0.0, 7 - (time.monotonic() - stopped)))
    finally:
        os.kill(manager_pid, signal.SIGCONT)
    finish(manager, workers, timeout=45)
    no_fault_seen(manager, workers)
    assert "stopping the gaggle: run time elapsed" in manager.stderr.text()
    assert aggregated(gaggle.report()) == fresh_target.completed_total() == fresh_target.total()


def test_a_worker_frozen_across_the_end_is_reported_and_exits_when_it_wakes(
    gaggle: Gaggle, fresh_target: CountingTarget
) -> None:
    """Frozen from before the end until after it: the Manager stops waiting for it once it is
    lost and says its totals are short (exit 3); the Worker, resumed, sees the run is done and
    exits at once with an error instead of waiting for an acknowledgement that cannot come."""
    manager = gaggle.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "6s", "--no-reset-metrics")
    workers = [gaggle.worker(), gaggle.worker()]
    by_index = {worker_index(w): w for w in workers}
    by_index[2].stderr.wait_for("go-ahead received", 20)
    fresh_target.wait_for_hits(200, timeout=20)
    os.kill(by_index[2].pid, signal.SIGSTOP)
    try:
        manager.stderr.wait_for(r"worker 2 \(\S+\) lost", 20)
        assert manager.wait(30) == 3, manager.output()
    finally:
        os.kill(by_index[2].pid, signal.SIGCONT)
    woke = time.monotonic()
    assert by_index[2].wait(15) == 1, by_index[2].output()
    assert time.monotonic() - woke < 8
    assert "the run ended without our final metrics" in by_index[2].stderr.text()
    assert by_index[1].wait(10) == 0
    report = gaggle.report()
    assert report["integrity"]["complete"] is False
    assert any("worker 2" in p and "lost" in p for p in report["integrity"]["problems"])
    assert aggregated(report) <= fresh_target.total()


def test_redis_restarted_while_the_manager_waits_for_final_deltas_loses_nothing(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    """Ctrl-C on a Worker while the Manager is frozen: both Workers stop and send their final
    deltas, then Redis restarts empty (the stop request and the finals are gone). The Worker
    that asked to stop asks again, the Workers send their finals again, the Manager merges
    them: exact totals, everyone exits 0."""
    manager = gaggle.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "60s", "--no-reset-metrics")
    workers = [gaggle.worker(), gaggle.worker()]
    by_index = {worker_index(w): w for w in workers}
    ids = [worker_id(w) for w in workers]
    wait_until(lambda: all(acked(redis_server, gaggle, wid) >= 1 for wid in ids), 20, "merged deltas")
    os.kill(manager.pid, signal.SIGSTOP)
    try:
        by_index[1].send_signal(signal.SIGINT)
        for w in workers:
            w.stderr.wait_for(r"final metrics: \d+ requests", 10)
        redis_server.stop()
        redis_server.start()
    finally:
        os.kill(manager.pid, signal.SIGCONT)
    manager.stderr.wait_for("stopping the gaggle: SIGINT on worker 1", 15)
    finish(manager, workers, timeout=45)
    report = gaggle.report()
    assert report["integrity"]["complete"] is True
    assert_exact_per_worker(report, workers, fresh_target)


def test_the_stream_is_trimmed_while_the_run_lasts_and_a_redis_crash_loses_nothing(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    """What is merged, checkpointed and acknowledged leaves the stream: it stays a few entries
    long however long the run. Redis killed (-9) and restarted mid-run: the Workers send again
    what was not acknowledged, and the totals stay exact."""
    manager = gaggle.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "14s", "--no-reset-metrics")
    workers = [gaggle.worker(), gaggle.worker()]
    ids = [worker_id(w) for w in workers]
    r = redis_server.client()
    stream = gaggle.key("metrics")
    longest = 0

    def merged(n: int) -> bool:
        nonlocal longest
        longest = max(longest, r.xlen(stream))
        return all(acked(redis_server, gaggle, wid) >= n for wid in ids)

    wait_until(lambda: merged(4), 30, "four merged deltas from each worker", interval=0.1)
    redis_server.kill()
    redis_server.start()
    wait_until(lambda: merged(6), 30, "merged deltas after the crash", interval=0.1)
    finish(manager, workers, timeout=45)
    seqs = [int(w.stderr.wait_for_match(r"final metrics: \d+ requests, \d+ failures \(seq (\d+)\)", 5).group(1))
            for w in workers]  # fmt: skip
    assert sum(seqs) >= 12  # deltas sent in all
    assert longest <= 6, longest  # ... but never more than a few in the stream at once
    assert aggregated(gaggle.report()) == fresh_target.completed_total() == fresh_target.total()
