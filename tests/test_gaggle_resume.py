"""The Manager crashes (kill -9): what it leaves in Redis expires, its Workers stop within
their grace unless a Manager comes back, and a Manager started again either adopts the run
(the same test: it ends at its planned time with exact totals) or starts a fresh one
cleanly (another test, or --no-resume: the old Workers stop, the new ones run).

Real redis-server, real CLI processes, real counting targets (helpers in test_gaggle.py).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import orjson
import pytest
import redis
from support import CliProcess, CountingTarget, ProcessTracker, RedisServer, run_cli
from test_gaggle import Gaggle, aggregated, finish, wait_until, worker_id, worker_index
from test_gaggle_faults import acked
from test_gaggle_junk_keys import no_fault_seen

pytestmark = pytest.mark.slow

SECRET = "resume-test-secret-0123456789"
SIGNED = {"GOOSE_GAGGLE_SECRET": SECRET}
WORKER_OWNED = ("workers", "worker:", "hb:")  # refreshed by the Workers themselves while they live


@pytest.fixture
def gaggle(procs: ProcessTracker, redis_url: str, tmp_path: Path) -> Gaggle:
    return Gaggle(procs, redis_url, tmp_path / "gaggle")


def keys_without_ttl(r: redis.Redis, g: Gaggle, skip: tuple[str, ...] = ()) -> list[str]:
    base = g.key("")
    names = [k.decode() for k in r.scan_iter(match=base + "*")]
    return [k for k in names if not k.removeprefix(base).startswith(skip) and r.ttl(k) == -1]


def run_id_of(r: redis.Redis, g: Gaggle) -> str:
    raw = r.hget(g.key("run"), "run_id")
    assert isinstance(raw, bytes)
    return raw.decode()


def test_after_kill_9_of_the_manager_every_key_expires_and_the_workers_stop_within_their_grace(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    manager = gaggle.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "60s", "--no-reset-metrics")
    workers = [gaggle.worker("--manager-grace", "4s"), gaggle.worker("--manager-grace", "4s")]
    ids = [worker_id(w) for w in workers]
    wait_until(lambda: all(acked(redis_server, gaggle, wid) >= 1 for wid in ids), 20, "merged deltas")
    r = redis_server.client()
    assert r.exists(gaggle.key("checkpoint"))
    manager.kill()
    killed = time.monotonic()
    # Everything the Manager wrote has a TTL (run, shape, metrics, acks, checkpoint, assign:*...).
    assert keys_without_ttl(r, gaggle, skip=WORKER_OWNED) == []
    for w in workers:
        assert w.wait(20) == 1, w.output()
        assert "manager went away" in w.stderr.text()
    # The grace (4 s here) after the last heartbeat, a heartbeat or two to notice, and the drain.
    assert time.monotonic() - killed < 4 + 5, time.monotonic() - killed
    # The Workers removed their own keys' reasons to live: nothing is left without a TTL.
    assert keys_without_ttl(r, gaggle) == []


def test_a_manager_stopped_at_the_barrier_leaves_every_key_with_a_ttl(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    manager = gaggle.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "4s")
    worker = gaggle.worker()
    worker.stderr.wait_for("waiting for the go-ahead", 15)
    manager.send_signal(signal.SIGINT)
    assert manager.wait(15) == 0, manager.output()
    assert worker.wait(15) == 0, worker.output()
    r = redis_server.client()
    assert r.hget(gaggle.key("run"), "state") == b"done"
    assert not r.exists(gaggle.key("checkpoint")) and not r.exists(gaggle.key("manager"))
    assert keys_without_ttl(r, gaggle) == []
    assert fresh_target.total() == 0


def test_a_new_manager_after_a_crash_runs_a_fresh_test_and_the_old_workers_stop(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget, second_target: CountingTarget
) -> None:
    """Started 6 s after the crash, with another host (so another test: no adoption): it never
    takes in the old Workers, which stop as soon as they see the new run; it runs the new
    Workers to the end, with exact totals against its own target."""
    first = gaggle.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "60s", "--no-reset-metrics")
    old = [gaggle.worker(), gaggle.worker()]
    ids = [worker_id(w) for w in old]
    wait_until(lambda: all(acked(redis_server, gaggle, wid) >= 1 for wid in ids), 20, "merged deltas")
    r = redis_server.client()
    old_run = run_id_of(r, gaggle)
    first.kill()
    time.sleep(6)  # the timing: the old Workers are still alive (10 s grace)
    assert all(w.returncode is None for w in old)
    manager = gaggle.manager(second_target.url, 4, 2, "-r", "50", "-t", "4s", "--no-reset-metrics")
    manager.stderr.wait_for(rf"not resuming run {old_run}: this is a different test", 10)
    for w in old:
        assert w.wait(15) == 1, w.output()
        assert f"run {old_run} is over: a new manager started run" in w.stderr.text()
    new = [gaggle.worker(), gaggle.worker()]
    assert sorted(worker_index(w) for w in new) == [1, 2]
    finish(manager, new, timeout=45)
    assert f"belongs to run {old_run}, which is over: not admitted" in manager.stderr.text()
    report = gaggle.report()
    assert report["integrity"]["complete"] is True
    assert aggregated(report) == second_target.completed_total() == second_target.total()


def restart(gaggle: Gaggle, target: CountingTarget, args: tuple[str, ...], crashed: CliProcess) -> CliProcess:
    crashed.kill()
    return gaggle.manager(target.url, 4, 2, *args)


def test_a_restarted_manager_adopts_the_run_and_it_ends_on_time_with_exact_totals(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    """In a signed gaggle, so the checkpoint and the acknowledgements it adopts carry MACs."""
    args = ("-r", "50", "-t", "16s", "--no-reset-metrics", "--throttle-requests", "300", "--gaggle-secret", SECRET)
    manager = gaggle.manager(fresh_target.url, 4, 2, *args)
    workers = [gaggle.worker(env=SIGNED), gaggle.worker(env=SIGNED)]
    ids = [worker_id(w) for w in workers]
    wait_until(lambda: all(acked(redis_server, gaggle, wid) >= 2 for wid in ids), 20, "merged deltas")
    r = redis_server.client()
    run = run_id_of(r, gaggle)
    started = manager.stderr.wait_for_match(r"the gaggle starts at (\S+)", 1).group(1)
    time.sleep(0.7)  # mid-interval: some deltas merged but not yet checkpointed or acknowledged
    second = restart(gaggle, fresh_target, args, manager)
    second.stderr.wait_for(rf"resuming run {run} \(running, 2 of 2 workers alive\)", 15)
    finish(second, workers, timeout=45)
    no_fault_seen(second, workers)
    assert "stopping the gaggle: run time elapsed" in second.stderr.text()
    report = gaggle.report()
    assert report["integrity"]["complete"] is True, report["integrity"]
    assert time.strftime("%H:%M:%S", time.localtime(report_start(report))) == started
    assert 15 <= report["duration_s"] <= 19, report["duration_s"]  # the planned 16 s, not 16 s more
    assert aggregated(report) == fresh_target.completed_total() == fresh_target.total()


def report_start(report: dict[str, object]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(report["started_at"])).timestamp()


def test_a_manager_killed_at_the_barrier_and_restarted_keeps_its_workers(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    args = ("-r", "50", "-t", "4s", "--no-reset-metrics")
    manager = gaggle.manager(fresh_target.url, 4, 2, *args)
    first = gaggle.worker()
    assert worker_index(first) == 1
    first.stderr.wait_for("waiting for the go-ahead", 10)
    r = redis_server.client()
    run = run_id_of(r, gaggle)
    wid = worker_id(first)
    wait_until(lambda: wid.encode() in (r.hget(gaggle.key("checkpoint"), "head") or b""), 10, "a checkpoint")
    second = restart(gaggle, fresh_target, args, manager)
    second.stderr.wait_for(rf"resuming run {run} \(waiting, 1 of 1 workers alive\)", 15)
    late = gaggle.worker()
    assert worker_index(late) == 2
    finish(second, [first, late], timeout=45)
    assert len(first.stderr.text().split("worker 1 connected")) == 2  # assigned once, never again
    assert aggregated(gaggle.report()) == fresh_target.completed_total() == fresh_target.total()


def test_a_worker_waiting_at_a_crashed_managers_barrier_joins_the_next_run(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget, second_target: CountingTarget
) -> None:
    """Nothing ran yet: the Worker has nothing to lose, so when a new Manager starts a fresh run
    it registers again (without the old run id) and is taken in."""
    first = gaggle.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "4s", "--no-reset-metrics")
    worker = gaggle.worker()
    worker.stderr.wait_for("waiting for the go-ahead", 15)
    old_run = run_id_of(redis_server.client(), gaggle)
    first.kill()
    manager = gaggle.manager(second_target.url, 2, 1, "-r", "50", "-t", "3s", "--no-reset-metrics")
    worker.stderr.wait_for(rf"run {old_run} is over \(a new manager started run \w+\): registering again", 15)
    finish(manager, [worker], timeout=45)
    assert fresh_target.total() == 0
    assert aggregated(gaggle.report()) == second_target.completed_total() == second_target.total() > 0


def test_a_frozen_manager_replaced_by_a_new_one_steps_aside_when_it_wakes(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    """Frozen (SIGSTOP), not dead: a Manager started meanwhile adopts the run. When the old one
    wakes it finds another Manager's fresh heartbeat, writes nothing, and exits 1 with one
    line; the new one ends the run with exact totals."""
    args = ("-r", "50", "-t", "14s", "--no-reset-metrics")
    old = gaggle.manager(fresh_target.url, 4, 2, *args)
    workers = [gaggle.worker(), gaggle.worker()]
    ids = [worker_id(w) for w in workers]
    wait_until(lambda: all(acked(redis_server, gaggle, wid) >= 1 for wid in ids), 20, "merged deltas")
    os.kill(old.pid, signal.SIGSTOP)
    try:
        new = gaggle.manager(fresh_target.url, 4, 2, *args)
        new.stderr.wait_for(r"resuming run \w+ \(running, 2 of 2 workers alive\)", 15)
        time.sleep(1.5)  # its heartbeats are in Redis
    finally:
        os.kill(old.pid, signal.SIGCONT)
    assert old.wait(15) == 1, old.output()
    assert "Error: another manager took over gaggle 'default'" in old.stderr.text(), old.output()
    finish(new, workers, timeout=45)
    no_fault_seen(new, workers)
    assert aggregated(gaggle.report()) == fresh_target.completed_total() == fresh_target.total()


def test_an_unreadable_checkpoint_is_not_adopted(gaggle: Gaggle, redis_server: RedisServer) -> None:
    """A run in progress whose Manager is gone but whose checkpoint is junk: --resume fails with
    one line; without it the Manager starts a fresh run and says why."""
    r = redis_server.client()
    r.hset(gaggle.key("run"), mapping={"run_id": "0123456789ab", "state": "running"})
    r.hset(gaggle.key("checkpoint"), mapping={"head": "junk", "rows": "{}"})
    insist = gaggle.manager("http://127.0.0.1:9", 2, 1, "--resume")
    assert insist.wait(20) == 1, insist.output()
    error = [line for line in insist.stderr.text().splitlines() if line.startswith("Error:")]
    why = "it left no readable checkpoint"
    assert error == [f"Error: --resume: cannot resume run 0123456789ab of gaggle 'default': {why}"]
    fresh = gaggle.manager("http://127.0.0.1:9", 2, 1)
    fresh.stderr.wait_for(f"not resuming run 0123456789ab: {why}; starting a fresh run", 10)
    fresh.stderr.wait_for("waiting for 1 workers", 10)
    assert run_id_of(r, gaggle) != "0123456789ab"
    fresh.send_signal(signal.SIGINT)
    assert fresh.wait(15) == 0, fresh.output()


TINY_TEST = (
    "from goose_redis import Scenario, Transaction, User\n\n\n"
    "async def index(user: User) -> None:\n    await user.get('/')\n\n\n"
    "tiny = Scenario('Tiny').register(Transaction(index))\n"
)


def test_a_forged_checkpoint_is_not_adopted_in_a_signed_gaggle(gaggle: Gaggle, redis_server: RedisServer) -> None:
    """Someone who can write to Redis but lacks the secret plants a well-formed checkpoint
    (signed with another secret): the Manager refuses it and starts a fresh run."""
    r = redis_server.client()
    r.hset(gaggle.key("run"), mapping={"run_id": "0123456789ab", "state": "running"})
    r.hset(gaggle.key("checkpoint"), mapping=forged_checkpoint("0123456789ab"))
    fresh = gaggle.manager("http://127.0.0.1:9", 2, 1, "--gaggle-secret", SECRET)
    fresh.stderr.wait_for("not resuming run 0123456789ab: it left no readable checkpoint", 10)
    assert "checkpoint field 'head' refused: its MAC does not match" in fresh.stderr.text(), fresh.output()
    fresh.stderr.wait_for("waiting for 1 workers", 10)
    fresh.send_signal(signal.SIGINT)
    assert fresh.wait(15) == 0, fresh.output()


def forged_checkpoint(run_id: str) -> dict[str, bytes]:
    from goose_redis.gaggle.auth import Auth
    from goose_redis.gaggle.checkpoint import seal
    from goose_redis.gaggle.protocol import PROTOCOL_VERSION, ShapeMessage
    from goose_redis.metrics import Metrics

    other = Auth(b"not-the-gaggle-secret-at-all", "default")
    shape = orjson.loads(ShapeMessage(run_id, 1, 1.0, [], None, None, 1.0, None, None, []).to_bytes())
    head = {"v": PROTOCOL_VERSION, "run_id": run_id, "fingerprint": "x", "state": "running", "started_at": 1.0,
            "stopping_at": None, "stop_reason": "", "shape": shape, "workers": [], "last_id": "0-0",
            "series": {"i": 1, "keys": []}}  # fmt: skip
    rows = {"m": Metrics().to_wire(), "r": Metrics().to_wire()}
    return {name: seal(other, run_id, name, orjson.dumps(doc)) for name, doc in (("head", head), ("rows", rows))}


def test_resume_with_nothing_to_resume_fails_with_one_line(redis_url: str, tmp_path: Path) -> None:
    load_test = tmp_path / "loadtest.py"
    load_test.write_text(TINY_TEST)
    proc = run_cli(["-f", str(load_test), "--manager", "--expect-workers", "1", "-H", "http://127.0.0.1:9",
                    "--redis-url", redis_url, "--resume"], timeout=30)  # fmt: skip
    assert proc.returncode == 1, proc
    lines = proc.stderr.strip().splitlines()
    assert lines == ["Error: --resume: there is no run in progress in gaggle 'default' to resume"], proc.stderr


MANAGER = ["--manager", "--expect-workers", "1", "-H", "http://127.0.0.1:9"]


@pytest.mark.parametrize(
    ("args", "option", "detail"),
    [
        ([*MANAGER, "--resume", "--no-resume"], "--no-resume", "can not be set together with --resume"),
        (["--worker", "--resume"], "--resume", "is for the --manager"),
        (["--worker", "--no-resume"], "--no-resume", "is for the --manager"),
        ([*MANAGER, "--manager-grace", "30s"], "--manager-grace", "is set on each --worker"),
        (["--worker", "--manager-grace", "0s"], "--manager-grace", "must be longer than 0 seconds"),
    ],
)
def test_restart_options_are_checked_before_anything_starts(
    args: list[str], option: str, detail: str, tmp_path: Path
) -> None:
    load_test = tmp_path / "loadtest.py"
    load_test.write_text(TINY_TEST)
    proc = run_cli(["-f", str(load_test), *args], timeout=30)
    assert proc.returncode == 2, proc
    assert proc.stderr.startswith(f'Error: InvalidOption {{ option: "{option}"'), proc.stderr
    assert detail in proc.stderr and "no such option" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
