"""Who may steer a gaggle (--gaggle-secret), end to end: a real redis-server, the real CLI as
Manager and Workers, real HTTP targets on loopback, and an attacker with a plain redis-py
client who can write every ``goose:*`` key.

With a secret, every forgery and replay the attacker writes is refused, logged once per
kind, and changes nothing: the run ends on its run time with totals equal to what the
target served. Without a secret the same forgery of an assignment does move a Worker (the
control case, so the forgery is known to be a real one). Mismatched secrets end with one
clear line instead of a hang.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from support import CliProcess, CountingTarget, ProcessTracker, RedisServer
from test_gaggle import Gaggle, aggregated, finish, pid_of, wait_until, worker_id

from goose_redis.gaggle.protocol import Assignment, ManagerBeat, ShapeMessage
from goose_redis.metrics import Metrics
from goose_redis.shape import simple
from goose_redis.sketch import key_of, sketch_from_wire

pytestmark = pytest.mark.slow

SECRET = "gaggle-" + secrets.token_hex(16)
SIGNED = {"GOOSE_GAGGLE_SECRET": SECRET}


@pytest.fixture
def gaggle(procs: ProcessTracker, redis_url: str, tmp_path: Path) -> Gaggle:
    return Gaggle(procs, redis_url, tmp_path / "gaggle")


def redis_now(r: redis.Redis) -> float:
    secs, usecs = r.time()
    return float(secs) + usecs / 1e6


def hammer(write: Callable[[], Any], until: Callable[[], bool], what: str, timeout: float = 8.0) -> None:
    """Write a forgery again and again (the real writer re-writes its keys every second)
    until ``until`` holds; AssertionError naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        write()
        time.sleep(0.05)


def count(proc: CliProcess, text: str) -> int:
    return sum(text in line for line in proc.stderr.lines())


def logged(proc: CliProcess, text: str) -> Callable[[], bool]:
    return lambda: count(proc, text) > 0


def million_request_delta() -> bytes:
    """A well-formed delta claiming a million requests (the sketch agrees with the count)."""
    m = Metrics()
    row = m.request_row("GET", "index")
    row.record(1.0, True, 200)
    row.sketch = sketch_from_wire([0, key_of(1.0), 1_000_000])
    row.count, row.total_ms, row.status_codes = 1_000_000, 1_000_000.0, {200: 1_000_000}
    return zlib.compress(orjson.dumps(m.to_wire()))


def refusal_kinds(proc: CliProcess) -> set[str]:
    """What a process refused: "unauthenticated metrics entry", "replayed shape", ..."""
    return {m.group(1) for line in proc.stderr.lines() if (m := re.search(r"refused an? ([\w ]+?): ", line))}


def assert_secret_nowhere(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text


# -- a signed gaggle under attack --------------------------------------------------------------


def test_a_signed_gaggle_refuses_forgeries_and_replays(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    r = redis_server.client()
    manager = gaggle.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "14s", "--no-reset-metrics", env=SIGNED)
    manager.stderr.wait_for("waiting for 2 workers", 20)
    assert count(manager, "unauthenticated:") == 0  # no NOTICE: this gaggle has a secret
    assert "every message is signed" in manager.stderr.text()

    # A fake Worker registers first: without a secret it would take slot 1 of 2.
    now = redis_now(r)
    fake = "attacker-1-beef"
    load_hash = r.hget(gaggle.key("run"), "hash").decode()
    reg = {"v": 2, "id": fake, "host": "evil", "pid": 1, "hash": load_hash, "at": now}
    r.hset(gaggle.key("workers"), fake, json.dumps(reg))
    r.set(gaggle.key(f"hb:{fake}"), now, ex=60)
    r.publish(gaggle.key("control"), "register")
    manager.stderr.wait_for("refused an unauthenticated registration", 10)
    waiting_shape = r.get(gaggle.key("shape"))  # epoch 0, signed: to replay later
    assert waiting_shape is not None and b'"epoch":0' in waiting_shape

    workers = [gaggle.worker(env=SIGNED), gaggle.worker(env=SIGNED)]
    ids = [worker_id(w) for w in workers]
    manager.stderr.wait_for("gaggle distributed load test started", 30)
    fresh_target.wait_for_hits(40, timeout=20)
    run_id = r.hget(gaggle.key("run"), "run_id").decode()

    def on_both(text: str) -> Callable[[], bool]:
        return lambda: all(count(w, text) for w in workers)

    # A stop request, as the docs' redis-cli recipe writes it.
    stop = {"v": 2, "by": "operator", "reason": "forged stop", "at": redis_now(r)}
    r.set(gaggle.key("stop"), json.dumps(stop))
    r.publish(gaggle.key("control"), "exit")
    wait_until(logged(manager, "refused an unauthenticated stop request"), 10, "the manager to refuse the stop")
    wait_until(on_both("refused an unauthenticated stop request"), 10, "the workers to refuse the stop")

    # The run state "stopping" (the Manager re-writes the hash every second).
    hammer(lambda: r.hset(gaggle.key("run"), mapping={"state": "stopping", "stop_reason": "forged"}),
           on_both("refused an unauthenticated run state"), "the workers to refuse the run state")  # fmt: skip

    # A shape that gives both Workers' users away, and the real shape of epoch 0, replayed. A
    # Worker reads the shape key only when the (signed) run state names a newer epoch, so these
    # are not even read; if one is (the run state forged a moment before), it is refused.
    started = float(r.hget(gaggle.key("run"), "started_at"))
    forged_shape = ShapeMessage.of(run_id, 99, started, simple(4, 0.02, 1.0), []).to_bytes()
    for shape in (forged_shape, waiting_shape):
        for _ in range(10):
            r.set(gaggle.key("shape"), shape)
            r.publish(gaggle.key("control"), "shape")
            time.sleep(0.2)
    users_now = fresh_target.total()
    fresh_target.wait_for_hits(users_now + 20, timeout=10)  # both Workers' users still at work

    # Acknowledgements far ahead (a Worker would drop its unsent deltas) and a manager heartbeat.
    hammer(lambda: r.hset(gaggle.key("acks"), mapping={wid: "999999" for wid in ids}),
           on_both("refused an unauthenticated acknowledgement"), "the workers to refuse the acks")  # fmt: skip
    hammer(lambda: r.set(gaggle.key("manager"), ManagerBeat(run_id, redis_now(r)).to_bytes(), ex=5),
           on_both("refused an unauthenticated manager heartbeat"), "the workers to refuse the beat")  # fmt: skip

    # Deltas: a million requests for a real Worker, unsigned and with a made-up MAC; a real one replayed.
    head = {"v": 2, "run": run_id, "w": ids[0], "seq": 1000, "phase": "steady", "final": False, "n": 10**6, "f": 0}
    data = million_request_delta()
    r.xadd(gaggle.key("metrics"), {"head": json.dumps(head), "data": data})
    r.xadd(gaggle.key("metrics"), {"head": json.dumps({**head, "seq": 1001, "mac": "0" * 64}), "data": data})
    (_, real), *_ = r.xrange(gaggle.key("metrics"), count=1)
    r.xadd(gaggle.key("metrics"), real)
    wait_until(logged(manager, "refused an unauthenticated metrics entry"), 10, "the manager to refuse the deltas")
    assert manager.returncode is None and r.hget(gaggle.key("run"), "stop_reason") == b""

    finish(manager, workers, timeout=60)
    log = manager.stderr.text()
    assert "stopping the gaggle: run time elapsed" in log
    for text in ("refused an unauthenticated registration", "refused an unauthenticated stop request",
                 "refused an unauthenticated metrics entry"):  # fmt: skip
        assert count(manager, text) == 1, manager.output()
    # Nothing else: no real Worker's message was taken for a forgery. (The forged run state and
    # heartbeat, which the Manager reads to learn whether another Manager replaced it, too.)
    assert refusal_kinds(manager) == {"unauthenticated registration", "unauthenticated stop request",
                                      "unauthenticated metrics entry", "unauthenticated run state",
                                      "unauthenticated manager heartbeat"}, manager.output()  # fmt: skip
    assert "refused 2 unauthenticated metrics entries (logged once)" in log
    for w in workers:
        for what in ("stop request", "run state", "acknowledgement", "manager heartbeat"):
            assert count(w, f"refused an unauthenticated {what}:") == 1, (what, w.output())
        assert count(w, "refused an unauthenticated shape:") <= 1 and count(w, "refused a replayed shape") <= 1
        kinds = {"unauthenticated stop request", "unauthenticated run state", "unauthenticated acknowledgement",
                 "unauthenticated manager heartbeat"}  # fmt: skip
        assert kinds <= refusal_kinds(w) <= kinds | {"unauthenticated shape", "replayed shape"}, w.output()
        assert "received EXIT (run time elapsed)" in w.stderr.text()
        assert "epoch 99" not in w.stderr.text()
    report = gaggle.report()
    assert {pid_of(s) for s in report["workers"]} == {w.pid for w in workers}
    assert aggregated(report) == fresh_target.completed_total() == fresh_target.total()
    assert report["verdict"]["exit_code"] == 0 and all(s["requests"] > 0 for s in report["workers"])
    assert_secret_nowhere(manager.output(), *(w.output() for w in workers), gaggle.report_path.read_text())


@pytest.mark.parametrize("signed", [False, True], ids=["without a secret", "with a secret"])
def test_a_forged_assignment_cannot_point_an_idle_worker_at_another_host(
    signed: bool, gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    """An idle Worker (no Manager yet) and an attacker who writes a whole run for it: an
    assignment to another host (a second target, the one no load may reach), a run state,
    a shape starting now and a manager heartbeat. Without a secret the Worker obeys."""
    decoy = fresh_target
    r = redis_server.client()
    worker = gaggle.worker(env=SIGNED if signed else None)
    wid = worker_id(worker)
    run_id = "feedfacecafe"
    assignment = Assignment(run_id, 1, 1, 2, 2, decoy.url, 5.0, None, None).to_bytes()
    started = redis_now(r) + 0.5
    shape = ShapeMessage.of(run_id, 1, started, simple(2, 0.1, 30.0), [wid]).to_bytes()

    def forge() -> None:
        now = redis_now(r)
        with r.pipeline(transaction=False) as p:
            p.set(gaggle.key(f"assign:{wid}"), assignment)
            p.hset(gaggle.key("run"), mapping={"v": 2, "run_id": run_id, "state": "running", "stop_reason": "",
                                               "started_at": started})  # fmt: skip
            p.set(gaggle.key("shape"), shape)
            p.set(gaggle.key("manager"), ManagerBeat(run_id, now).to_bytes(), ex=5)
            p.publish(gaggle.key("control"), "assign")
            p.execute()

    if not signed:
        hammer(forge, lambda: decoy.total() > 0, "the forged run to reach the decoy", timeout=15)
        assert "worker 1 connected: 2 of 2 users" in worker.stderr.text()
        return
    hammer(forge, logged(worker, "refused an unauthenticated assignment"), "the worker to refuse the assignment")
    deadline = time.monotonic() + 3.0  # the unsigned case above reaches the decoy within a second
    while time.monotonic() < deadline:
        forge()
        assert decoy.total() == 0, "a forged assignment moved the worker"
        time.sleep(0.1)
    worker.send_signal(signal.SIGINT)
    assert worker.wait(20) == 0, worker.output()
    assert count(worker, "refused an unauthenticated assignment") == 1
    assert "connected:" not in worker.stderr.text() and decoy.total() == 0


def test_replays_from_an_earlier_run_are_refused(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    """Run 1 ends with a real (signed) stop request from a Worker's Ctrl-C. In run 2 (same
    gaggle, same secret) its stop request, its deltas and its final run state are written
    again: all are bound to run 1, and run 2 goes on to its run time with exact totals."""
    r = redis_server.client()
    m1 = gaggle.manager(fresh_target.url, 2, 1, "-r", "50", "-t", "60s", "--no-reset-metrics", env=SIGNED)
    w1 = gaggle.worker(env=SIGNED)
    fresh_target.wait_for_hits(30, timeout=20)
    w1.send_signal(signal.SIGINT)
    finish(m1, [w1], timeout=30)
    assert "stopping the gaggle: SIGINT on worker 1" in m1.stderr.text()
    old_stop = r.get(gaggle.key("stop"))
    old_run = r.hgetall(gaggle.key("run"))
    old_entries = [fields for _, fields in r.xrange(gaggle.key("metrics"))]
    assert old_stop is not None and b'"mac"' in old_stop and old_run[b"state"] == b"done" and old_entries
    served_before = fresh_target.completed_total()

    m2 = gaggle.manager(fresh_target.url, 2, 1, "-r", "50", "-t", "8s", "--no-reset-metrics", env=SIGNED)
    w2 = gaggle.worker(env=SIGNED)
    m2.stderr.wait_for("gaggle distributed load test started", 30)
    fresh_target.wait_for_hits(served_before + 20, timeout=20)
    for fields in old_entries:
        r.xadd(gaggle.key("metrics"), fields)
    refused_stop = "refused an unauthenticated stop request"
    hammer(lambda: r.set(gaggle.key("stop"), old_stop),
           lambda: logged(m2, refused_stop)() and logged(w2, refused_stop)(), "both to refuse the old stop request")
    hammer(lambda: r.hset(gaggle.key("run"), mapping=old_run), logged(w2, "refused an unauthenticated run state"),
           "the worker to refuse the old run state")  # fmt: skip
    finish(m2, [w2], timeout=60)
    assert "stopping the gaggle: run time elapsed" in m2.stderr.text()
    assert count(m2, "refused an unauthenticated stop request") == 1, m2.output()
    assert count(w2, "refused an unauthenticated stop request") == 1, w2.output()
    assert aggregated(gaggle.report()) == fresh_target.completed_total() - served_before


def test_forged_manager_heartbeats_do_not_hide_a_dead_manager(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    """The Manager is killed; an attacker keeps its heartbeat fresh. The Worker must still see
    that its Manager went away, and stop."""
    r = redis_server.client()
    manager = gaggle.manager(fresh_target.url, 2, 1, "-r", "50", "-t", "60s", env=SIGNED)
    worker = gaggle.worker(env=SIGNED)
    fresh_target.wait_for_hits(20, timeout=20)
    run_id = r.hget(gaggle.key("run"), "run_id").decode()
    manager.kill()
    hammer(lambda: r.set(gaggle.key("manager"), ManagerBeat(run_id, redis_now(r)).to_bytes(), ex=5),
           lambda: worker.returncode is not None, "the worker to give up on its manager", timeout=30)  # fmt: skip
    assert worker.wait(10) == 1, worker.output()
    assert "manager went away" in worker.stderr.text()
    assert count(worker, "refused an unauthenticated manager heartbeat") == 1, worker.output()


# -- secrets that do not match ---------------------------------------------------------------------------


def _error_lines(proc: CliProcess) -> list[str]:
    return [line for line in proc.stderr.lines() if " ERROR " in line]


def test_workers_without_the_secret_or_with_another_are_refused(
    gaggle: Gaggle, fresh_target: CountingTarget
) -> None:
    manager = gaggle.manager(fresh_target.url, 2, 1, "-r", "50", "-t", "2s", "--no-reset-metrics", env=SIGNED)
    manager.stderr.wait_for("waiting for 1 workers", 20)
    started = time.monotonic()
    unsigned = gaggle.worker()
    wrong = gaggle.worker(env={"GOOSE_GAGGLE_SECRET": "another-" + secrets.token_hex(16)})
    assert unsigned.wait(20) == 1, unsigned.output()
    [line] = _error_lines(unsigned)
    assert "gaggle 'default' is authenticated (its manager signs every message) and this worker has no " \
           "--gaggle-secret" in line, unsigned.output()  # fmt: skip
    assert wrong.wait(30) == 1, wrong.output()
    assert time.monotonic() - started < 25
    [line] = _error_lines(wrong)
    assert "the manager of gaggle 'default' does not sign its messages with this worker's secret" in line, \
        wrong.output()
    assert "Traceback" not in unsigned.output() + wrong.output()
    # The gaggle is still waiting for a Worker with the secret, and runs with it.
    member = gaggle.worker(env=SIGNED)
    finish(manager, [member])
    assert count(manager, "refused an unauthenticated registration") == 1, manager.output()
    # Each refused Worker's registration is counted once; the one with another secret may see the
    # Manager's signed messages and leave before its registration is read.
    summary = r"refused (1 unauthenticated registration|2 unauthenticated registrations) \(logged once\)"
    assert re.search(summary, manager.stderr.text()), manager.output()
    assert refusal_kinds(manager) == {"unauthenticated registration"}, manager.output()
    assert refusal_kinds(member) == set(), member.output()
    assert [pid_of(s) for s in gaggle.report()["workers"]] == [member.pid]
    assert aggregated(gaggle.report()) == fresh_target.completed_total() > 0


def test_without_a_secret_the_manager_says_so_and_refuses_a_signed_worker(
    gaggle: Gaggle, fresh_target: CountingTarget
) -> None:
    manager = gaggle.manager(fresh_target.url, 2, 1, "-r", "50", "-t", "2s", "--no-reset-metrics")
    notice = manager.stderr.wait_for("is unauthenticated", 20)
    assert re.search(r"NOTICE gaggle 'default' is unauthenticated: anyone who can write goose:default:\* in Redis "
                     r"can steer it \(see docs/deploy.md\)", notice), notice  # fmt: skip
    signed = gaggle.worker(env=SIGNED)
    assert signed.wait(30) == 1, signed.output()
    [line] = _error_lines(signed)
    assert "does not sign its messages with this worker's secret" in line
    unsigned = gaggle.worker()
    finish(manager, [unsigned])
    assert count(manager, "is unauthenticated") == 1
    assert count(manager, "refused a signed registration") == 1, manager.output()
    assert [pid_of(s) for s in gaggle.report()["workers"]] == [unsigned.pid]
    assert_secret_nowhere(manager.output(), signed.output())
