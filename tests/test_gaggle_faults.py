"""The Gaggle when things go wrong: a Worker killed, the Manager killed, Redis restarted,
and garbage written into the gaggle's keys. Real redis-server, real CLI processes, a real
counting target (see test_gaggle.py for the load test and the helpers)."""

from __future__ import annotations

import json
import os
import signal
import time
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from support import CliProcess, CountingTarget, ProcessTracker, RedisServer
from test_gaggle import Gaggle, aggregated, finish, pid_of, wait_until, worker_id, worker_index

from goose_redis.gaggle.protocol import PROTOCOL_VERSION
from goose_redis.metrics import Metrics

pytestmark = pytest.mark.slow


@pytest.fixture
def gaggle(procs: ProcessTracker, redis_url: str, tmp_path: Path) -> Gaggle:
    return Gaggle(procs, redis_url, tmp_path / "gaggle")


def acked(server: RedisServer, g: Gaggle, wid: str) -> int:
    """The highest metrics seq the Manager merged for Worker ``wid`` (0 if none yet)."""
    raw = server.client().hget(g.key("acks"), wid)
    return int(raw.split(b":")[0]) if raw is not None else 0  # (signed: "seq:mac")


def assert_exact_per_worker(report: dict[str, Any], workers: list[CliProcess], target: CountingTarget) -> None:
    """Each Worker's row equals what it counted itself, and the total what the target answered."""
    for w in workers:
        row = next(s for s in report["workers"] if pid_of(s) == w.pid)
        assert row["requests"] == final_count(w)
    assert aggregated(report) == target.completed_total() == target.total()


def final_count(worker: CliProcess) -> int:
    """What the Worker itself counted, from its last log line about metrics."""
    return int(worker.stderr.wait_for_match(r"final metrics: (\d+) requests", 5).group(1))


def test_kill_9_of_a_worker_is_noticed_and_the_rest_carry_on(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    manager = gaggle.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "60s", "--no-reset-metrics")
    workers = [gaggle.worker(), gaggle.worker()]
    by_index = {worker_index(w): w for w in workers}
    survivor, victim = by_index[1], by_index[2]
    victim_id = worker_id(victim)
    # Let the Manager merge at least one delta of the victim, then kill it without warning.
    wait_until(lambda: acked(redis_server, gaggle, victim_id) >= 1, 20, "a merged delta from worker 2")
    victim.kill()
    killed = time.monotonic()

    match = manager.stderr.wait_for_match(
        r"worker 2 \(\S+\) lost: no heartbeat for \d+s; keeping its (\d+) requests so far", 15
    )
    assert time.monotonic() - killed < 12, "the loss took too long to notice"
    kept = int(match.group(1))
    assert kept > 0
    # The gaggle carries on with the other Worker.
    so_far = fresh_target.total()
    fresh_target.wait_for_hits(so_far + 50, timeout=10)
    assert manager.returncode is None and survivor.returncode is None

    manager.send_signal(signal.SIGINT)
    finish(manager, [survivor], timeout=40, manager_code=3)  # it knows worker 2's last deltas are missing
    report = gaggle.report()
    assert report["integrity"]["complete"] is False
    assert any("worker 2" in p and "lost" in p for p in report["integrity"]["problems"])
    assert "INCOMPLETE" in manager.stdout.text()
    rows = {s["index"]: s for s in report["workers"]}
    assert rows[2]["requests"] == kept  # the lost Worker's earlier metrics stay in the report
    assert rows[2].get("state", "lost") == "lost"
    assert pid_of(rows[2]) == victim.pid
    assert rows[1]["requests"] == final_count(survivor)
    assert aggregated(report) == rows[1]["requests"] + rows[2]["requests"]
    # The victim's last, unsent requests are lost; nothing is counted twice.
    assert aggregated(report) <= fresh_target.total()


def test_a_worker_whose_manager_is_gone_stops_with_an_error(gaggle: Gaggle, fresh_target: CountingTarget) -> None:
    manager = gaggle.manager(fresh_target.url, 2, 1, "-r", "50", "-t", "60s")
    worker = gaggle.worker()
    fresh_target.wait_for_hits(20, timeout=20)
    manager.kill()
    gone = time.monotonic()
    code = worker.wait(30)
    took = time.monotonic() - gone
    assert code != 0, worker.output()
    assert "manager went away" in worker.stderr.text()
    # The grace is 10 s after the last heartbeat, noticed within a heartbeat or two, and the
    # drain of requests in flight is immediate here (docs/redis-keys.md, Liveness).
    assert 8 < took < 15, took
    # It stopped its users: the load ends with it.
    final = fresh_target.total()
    time.sleep(0.5)
    assert fresh_target.total() == final


def test_a_redis_restart_mid_test_loses_nothing(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    manager = gaggle.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "60s", "--no-reset-metrics")
    workers = [gaggle.worker(), gaggle.worker()]
    ids = [worker_id(w) for w in workers]
    wait_until(lambda: all(acked(redis_server, gaggle, wid) >= 1 for wid in ids), 20, "merged deltas")

    redis_server.stop()
    for p in (manager, *workers):
        p.stderr.wait_for("Redis unreachable while", 10)
    # The load goes on without Redis; the Workers buffer their deltas.
    so_far = fresh_target.total()
    fresh_target.wait_for_hits(so_far + 100, timeout=10)
    time.sleep(1.0)  # an outage of a couple of seconds: more than one metrics interval buffered
    redis_server.start()
    for p in (manager, *workers):
        p.stderr.wait_for(r"Redis is back after \d", 20)
    # Everyone subscribes to the control channel again (pub/sub is the wake-up path).
    control = gaggle.key("control")
    wait_until(lambda: dict(redis_server.client().pubsub_numsub(control)).get(control.encode()) == 3, 15, "resubscribe")
    # The restarted Redis is empty: the Manager merges the buffered deltas again.
    wait_until(lambda: all(acked(redis_server, gaggle, wid) >= 1 for wid in ids), 20, "deltas after the restart")

    stop_and_check_totals(gaggle, manager, workers, fresh_target)


def stop_and_check_totals(
    gaggle: Gaggle, manager: CliProcess, workers: list[CliProcess], target: CountingTarget
) -> None:
    """Ctrl-C the Manager; every Worker's own count is merged, and the merge equals the target's."""
    manager.send_signal(signal.SIGINT)
    finish(manager, workers, timeout=60)
    log = manager.stderr.text()
    assert "no final metrics" not in log and "but it counted" not in log, log
    assert_exact_per_worker(gaggle.report(), workers, target)


def test_deltas_that_a_redis_restart_lost_before_the_manager_read_them_are_sent_again(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    """The Manager is frozen (SIGSTOP) while both Workers add deltas to the stream, then
    Redis restarts empty: those deltas were never read. The Workers, never acknowledged,
    send them again, and the totals still match the target."""
    manager = gaggle.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "60s", "--no-reset-metrics")
    workers = [gaggle.worker(), gaggle.worker()]
    ids = [worker_id(w) for w in workers]
    wait_until(lambda: all(acked(redis_server, gaggle, wid) >= 1 for wid in ids), 20, "merged deltas")
    r = redis_server.client()
    stream = gaggle.key("metrics")
    os.kill(manager.pid, signal.SIGSTOP)
    try:
        # Taken once the Manager is frozen. Its blocking XREAD, already in Redis, may still be
        # answered with the next entry (the reply waits in its socket), but not the one after:
        # two entries from each Worker after this one leave each with a delta never read.
        newest: Any = r.xrevrange(stream, count=1)
        last = newest[0][0].decode() if newest else "0-0"

        def unread_from_both() -> bool:
            entries: Any = r.xrange(stream, min=f"({last}")
            senders = [orjson.loads(fields[b"head"])["w"] for _, fields in entries]
            return all(senders.count(wid) >= 2 for wid in ids)

        wait_until(unread_from_both, 10, "deltas from each worker that the manager has not read")
        redis_server.stop()
        for w in workers:
            w.stderr.wait_for("Redis unreachable while", 10)
        redis_server.start()
    finally:
        os.kill(manager.pid, signal.SIGCONT)
    for w in workers:
        w.stderr.wait_for(r"not acknowledged; re-sending \d+ deltas", 20)
    wait_until(lambda: all(acked(redis_server, gaggle, wid) >= 1 for wid in ids), 20, "deltas after the restart")

    stop_and_check_totals(gaggle, manager, workers, fresh_target)


def test_garbage_in_the_gaggles_keys_is_logged_and_ignored(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    manager = gaggle.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "6s", "--no-reset-metrics")
    manager.stderr.wait_for("waiting for 2 workers", 15)
    r = redis_server.client()
    k = gaggle.key
    run_id = r.hget(k("run"), "run_id")
    assert isinstance(run_id, bytes)
    run = run_id.decode()

    # Registrations that are not ours, each with a live-looking heartbeat.
    junk_regs = {
        "junk-1": "not json at all",
        "junk-2": json.dumps({"v": 99, "id": "junk-2", "host": "h", "pid": 1, "hash": "x", "at": 1.0}),
        "junk-3": json.dumps(
            {"v": PROTOCOL_VERSION, "id": "junk-3", "host": "h", "pid": "one", "hash": "x", "at": 1.0}
        ),
    }
    for wid, raw in junk_regs.items():
        r.hset(k("workers"), wid, raw)
        r.set(k(f"hb:{wid}"), "1", ex=60)
    r.sadd(k("ready"), "junk-1")
    r.publish(k("control"), "garbage")
    # Stream entries that are not deltas, or not for this run's workers.
    empty = zlib.compress(orjson.dumps(Metrics().to_wire()))
    head = {"v": PROTOCOL_VERSION, "run": run, "w": "nobody", "seq": 1, "phase": "steady", "final": True,
            "n": 5, "f": 0}  # fmt: skip
    r.xadd(k("metrics"), {"junk": "x"})
    r.xadd(k("metrics"), {"head": json.dumps({"v": PROTOCOL_VERSION + 1, "run": run}), "data": "{}"})
    r.xadd(k("metrics"), {"head": "not json", "data": b"\x00\x01"})
    r.xadd(k("metrics"), {"head": json.dumps(head), "data": empty})  # unknown worker
    r.xadd(k("metrics"), {"head": json.dumps({**head, "run": "earlier"}), "data": empty})  # an earlier run

    workers = [gaggle.worker(), gaggle.worker()]
    ids = [worker_id(w) for w in workers]
    fresh_target.wait_for_hits(50, timeout=20)
    # While the test runs: junk for a real Worker, a junk stop request, a junk heartbeat.
    r.xadd(k("metrics"), {"head": json.dumps({**head, "w": ids[0], "seq": 10_000, "final": False}), "data": "junk"})
    # A well-formed delta whose series lies in 1970: charting it would fill decades with empty points.
    far_off = Metrics()
    far_off.series.record(1000.0, "GET /", 1.0, True)
    far_head = {**head, "w": ids[0], "seq": 10_001, "final": False}
    r.xadd(k("metrics"), {"head": json.dumps(far_head), "data": zlib.compress(orjson.dumps(far_off.to_wire()))})

    # A junk acknowledgement: the Manager overwrites it with its next one, so keep writing
    # it until the Worker has read it once.
    def junk_ack_seen() -> bool:
        r.hset(k("acks"), ids[0], "many")
        return "ignoring a malformed acknowledgement" in workers[0].stderr.text()

    wait_until(junk_ack_seen, 10, "the worker to read a junk acknowledgement", interval=0.1)
    r.set(k("stop"), "please stop?")
    for w in workers:
        w.stderr.wait_for("ignoring a malformed stop request", 10)
    manager.stderr.wait_for("ignoring a malformed stop request", 10)
    # And a key of the wrong type where a string belongs.
    r.delete(k("stop"))
    r.hset(k("stop"), "not", "a string")
    manager.stderr.wait_for("Redis refused a command while reading stop requests", 10)

    finish(manager, workers, timeout=40)
    log = manager.stderr.text()
    for expected in (
        "ignoring a malformed worker registration 'junk-1'",
        "ignoring a malformed worker registration 'junk-2'",
        "ignoring a malformed worker registration 'junk-3'",
        "ignoring a malformed metrics entry",
        "ignoring metrics from unknown worker 'nobody'",
        "series times far from this run",
        "malformed or foreign metrics entries",
        "stopping the gaggle: run time elapsed",
    ):
        assert expected in log, (expected, log)
    for p in (manager, *workers):
        assert "Traceback" not in p.stderr.text(), p.output()
    report = gaggle.report()
    assert sorted(pid_of(s) for s in report["workers"]) == sorted(w.pid for w in workers)
    assert aggregated(report) == fresh_target.completed_total() == fresh_target.total()


def test_junk_in_the_stop_key_does_not_silence_a_real_stop_request(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    """The first stop request wins, but junk sitting in the key is not a request: Ctrl-C on
    a Worker replaces it, and the whole gaggle stops."""
    manager = gaggle.manager(fresh_target.url, 2, 2, "-r", "50", "-t", "60s", "--no-reset-metrics")
    workers = [gaggle.worker(), gaggle.worker()]
    by_index = {worker_index(w): w for w in workers}
    fresh_target.wait_for_hits(50, timeout=20)
    redis_server.client().set(gaggle.key("stop"), "junk", ex=3600)
    manager.stderr.wait_for("ignoring a malformed stop request", 10)
    by_index[2].send_signal(signal.SIGINT)
    by_index[1].stderr.wait_for(r"received EXIT \((worker 2: )?SIGINT on worker 2", 10)
    finish(manager, workers, timeout=30)
    assert "stopping the gaggle: SIGINT on worker 2" in manager.stderr.text()
    assert aggregated(gaggle.report()) == fresh_target.completed_total()
