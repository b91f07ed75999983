"""The gaggle's keys hold something else: a key of the wrong type, junk, a huge value, an
assignment out of range, a registration left by a Worker killed with -9. The owner of a key
repairs it, a reader takes it as no news, and the run ends on time with exact totals.

Real redis-server, real CLI processes, a real counting target (helpers in test_gaggle.py).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from support import CliProcess, CountingTarget, ProcessTracker, RedisServer
from test_gaggle import Gaggle, aggregated, finish, wait_until, worker_id, worker_index
from test_gaggle_faults import acked

from goose_redis.gaggle.protocol import PROTOCOL_VERSION as V

pytestmark = pytest.mark.slow


@pytest.fixture
def gaggle(procs: ProcessTracker, redis_url: str, tmp_path: Path) -> Gaggle:
    return Gaggle(procs, redis_url, tmp_path / "gaggle")


def clobber(r: redis.Redis, key: str) -> None:
    """Put a list where the gaggle keeps a hash, a stream, a set or a string."""
    with r.pipeline() as p:
        p.delete(key)
        p.rpush(key, "junk")
        p.execute()


def no_fault_seen(manager: CliProcess, workers: list[CliProcess]) -> None:
    """Nobody took the junk for a lost Worker, a gone Manager, or a crash."""
    text = manager.stderr.text()
    assert " lost: " not in text and "no final metrics" not in text and "but it counted" not in text, text
    for w in workers:
        assert "manager went away" not in w.stderr.text(), w.output()
        assert "Traceback" not in w.stderr.text(), w.output()


def run_with_junk(
    gaggle: Gaggle, server: RedisServer, target: CountingTarget, key: str, *, at_barrier: bool = False
) -> tuple[CliProcess, list[CliProcess]]:
    """A 2-Worker run of 6 s with ``key`` clobbered once, mid-run (or while the Manager waits)."""
    r = server.client()
    manager = gaggle.manager(target.url, 4, 2, "-r", "50", "-t", "6s", "--no-reset-metrics")
    manager.stderr.wait_for("waiting for 2 workers", 15)
    if at_barrier:
        workers = [gaggle.worker()]
        worker_index(workers[0])
        clobber(r, gaggle.key(key))
        workers[0].stderr.wait_for(rf"{key} held another kind of value", 10)
        workers.append(gaggle.worker())
    else:
        workers = [gaggle.worker(), gaggle.worker()]
        ids = [worker_id(w) for w in workers]
        wait_until(lambda: all(acked(server, gaggle, wid) >= 1 for wid in ids), 20, "merged deltas")
        clobber(r, gaggle.key(key.format(id=ids[0])))
    finish(manager, workers, timeout=45)
    no_fault_seen(manager, workers)
    assert aggregated(gaggle.report()) == target.completed_total() == target.total()
    return manager, workers


# Each key of the gaggle, with the type its owner writes again (None: nobody needs it after the start).
WRONG_TYPES = [
    ("run", "hash", "the run key held another kind of value"),
    ("metrics", "stream", "the metrics stream held another kind of value"),
    ("workers", "none", "goose:default:workers held another kind of value"),  # empty once all left
    ("acks", "hash", "the acks key held another kind of value"),
    ("worker:{id}", "hash", "held another kind of value"),
    ("shape", "string", None),
    ("stop", "none", "Redis refused a command while reading stop requests"),
    ("checkpoint", "none", "the checkpoint key held another kind of value"),  # deleted at the end
]


@pytest.mark.parametrize(("key", "final_type", "repair_line"), WRONG_TYPES, ids=[k for k, _, _ in WRONG_TYPES])
def test_a_key_of_the_wrong_type_mid_run_is_repaired_and_the_run_ends_on_time_with_exact_totals(
    gaggle: Gaggle,
    redis_server: RedisServer,
    fresh_target: CountingTarget,
    key: str,
    final_type: str,
    repair_line: str | None,
) -> None:
    manager, workers = run_with_junk(gaggle, redis_server, fresh_target, key)
    if repair_line is not None:
        owner_logs = manager.stderr.text() + "".join(w.stderr.text() for w in workers)
        assert repair_line in owner_logs, owner_logs
    r = redis_server.client()
    if "{id}" not in key:
        assert r.type(gaggle.key(key)).decode() == final_type
    assert "stopping the gaggle: run time elapsed" in manager.stderr.text()


def test_keys_of_the_wrong_type_before_the_manager_starts_do_not_stop_it(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    """A Manager reads `manager`, `run`, `checkpoint` and `workers` before it starts: junk
    there is no other Manager, no run to adopt, and no Worker."""
    r = redis_server.client()
    for key in ("manager", "run", "checkpoint", "workers", "stop", "acks", "metrics", "shape", "ready"):
        clobber(r, gaggle.key(key))
    manager = gaggle.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "3s", "--no-reset-metrics")
    workers = [gaggle.worker(), gaggle.worker()]
    finish(manager, workers, timeout=45)
    no_fault_seen(manager, workers)
    assert aggregated(gaggle.report()) == fresh_target.completed_total() == fresh_target.total()


def test_a_ready_set_of_the_wrong_type_at_the_barrier_is_repaired_and_the_gaggle_starts(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    manager, _ = run_with_junk(gaggle, redis_server, fresh_target, "ready", at_barrier=True)
    assert "all 2 workers ready" in manager.stderr.text()


def test_junk_in_the_shape_and_a_huge_stop_value_are_ignored_cheaply(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    """A shape that is not JSON (the Manager writes it again within a second), and 20 MB of
    junk in the stop key: read a few kilobytes at a time, never taken for a request."""
    r = redis_server.client()
    manager = gaggle.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "6s", "--no-reset-metrics")
    workers = [gaggle.worker(), gaggle.worker()]
    ids = [worker_id(w) for w in workers]
    wait_until(lambda: all(acked(redis_server, gaggle, wid) >= 1 for wid in ids), 20, "merged deltas")
    r.set(gaggle.key("shape"), "not a shape")
    r.set(gaggle.key("stop"), b"{" * 20_000_000)
    manager.stderr.wait_for("ignoring a malformed stop request: longer than", 10)
    for w in workers:
        w.stderr.wait_for("ignoring a malformed stop request: longer than", 10)
    finish(manager, workers, timeout=45)
    no_fault_seen(manager, workers)
    assert "stopping the gaggle: run time elapsed" in manager.stderr.text()
    assert aggregated(gaggle.report()) == fresh_target.completed_total() == fresh_target.total()


def test_an_assignment_out_of_range_is_ignored_and_the_worker_keeps_waiting(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    """``workers: 0`` is a well-typed assignment that makes no sense: no traceback, no crash;
    the Worker waits for a real one."""
    worker = gaggle.worker()
    wid = worker_id(worker)
    bad = {"v": V, "run_id": "x", "index": 1, "workers": 0, "users": 1, "total_users": 1, "host": None,
           "timeout_s": 1.0, "iterations": None, "scenarios": None}  # fmt: skip
    redis_server.client().set(gaggle.key(f"assign:{wid}"), json.dumps(bad))
    worker.stderr.wait_for("ignoring a malformed assignment: Assignment: index and workers", 10)
    assert worker.returncode is None
    manager = gaggle.manager(fresh_target.url, 2, 1, "-r", "50", "-t", "2s", "--no-reset-metrics")
    finish(manager, [worker], timeout=45)
    assert "Traceback" not in worker.stderr.text()
    assert aggregated(gaggle.report()) == fresh_target.completed_total()


def test_a_worker_killed_with_kill_9_leaves_no_registration_behind(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    manager = gaggle.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "60s", "--no-reset-metrics")
    workers = [gaggle.worker(), gaggle.worker()]
    by_index = {worker_index(w): w for w in workers}
    victim_id = worker_id(by_index[2])
    wait_until(lambda: acked(redis_server, gaggle, victim_id) >= 1, 20, "a merged delta from worker 2")
    by_index[2].kill()
    manager.stderr.wait_for(r"worker 2 \(\S+\) lost", 15)
    r = redis_server.client()
    # Once its heartbeat key is gone, the Manager removes its registration: a later Manager never polls it.
    wait_until(lambda: not r.hexists(gaggle.key("workers"), victim_id), 10, "the dead registration to go")
    manager.send_signal(signal.SIGINT)
    finish(manager, [by_index[1]], timeout=40, manager_code=3)
    assert r.hkeys(gaggle.key("workers")) == []


def test_ctrl_c_twice_on_a_worker_still_stops_the_gaggle_at_once(gaggle: Gaggle, fresh_target: CountingTarget) -> None:
    """The first Ctrl-C sends the stop request before the drain: a second one, a moment later,
    exits the Worker (130) but the gaggle still stops now, not at the end of its run time."""
    manager = gaggle.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "60s", "--no-reset-metrics")
    workers = [gaggle.worker(), gaggle.worker()]
    by_index = {worker_index(w): w for w in workers}
    fresh_target.wait_for_hits(100, timeout=20)
    by_index[2].send_signal(signal.SIGINT)
    time.sleep(0.05)
    by_index[2].send_signal(signal.SIGINT)
    asked = time.monotonic()
    assert by_index[2].wait(10) == 130, by_index[2].output()
    manager.stderr.wait_for("stopping the gaggle: SIGINT on worker 2", 10)
    assert time.monotonic() - asked < 10
    code = manager.wait(45)
    assert by_index[1].wait(20) == 0, by_index[1].output()
    report: dict[str, Any] = gaggle.report()
    if code == 3:  # worker 2's final delta did not make it: the Manager says so
        assert any("worker 2" in p for p in report["integrity"]["problems"]), report["integrity"]
    else:  # it did (its drain is quick): then the totals are exact
        assert code == 0, manager.output()
        assert aggregated(report) == fresh_target.completed_total()
