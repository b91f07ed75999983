"""``goose-redis status`` against a real redis-server holding what anyone could have
written with redis-cli: keys of the wrong type, fields that are not numbers, a garbled
heartbeat. It must always print a readable state (exit 0) with the bad parts marked
"unreadable", never a traceback; JSON numbers are numbers. With no Redis, or a Redis
that never answers, one line and exit 1 within ``--timeout``."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from support import free_port, run_cli

from goose_redis.gaggle.protocol import PROTOCOL_VERSION

G = "goose:default"


def status(url: str, *extra: str) -> tuple[int, str, str]:
    done = run_cli(["status", "--redis-url", url, *extra], timeout=30)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def status_json(url: str, *extra: str) -> dict[str, Any]:
    code, out, err = status(url, "--json", *extra)
    assert code == 0, err
    assert err == ""
    doc: dict[str, Any] = json.loads(out)
    return doc


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


def write_live_gaggle(r: redis.Redis, now: float) -> None:
    """What a Manager and one Worker write (docs/redis-keys.md), by hand."""
    r.hset(f"{G}:run", mapping={
        "v": 1, "run_id": "3f0586edbddd", "state": "running", "gaggle": "default", "expect_workers": 1,
        "users": 4, "hatch_rate": 2.5, "run_time_s": "", "host": "http://127.0.0.1:9", "hash": "f01e3f25a0f6bb9f",
        "started_at": now - 10, "stop_reason": "", "updated_at": now,
    })  # fmt: skip
    r.set(f"{G}:manager", json.dumps({"v": PROTOCOL_VERSION, "run_id": "3f0586edbddd", "at": now}), ex=60)
    r.hset(f"{G}:workers", "w1", json.dumps({"v": 1, "id": "w1", "host": "h", "pid": 7, "hash": "x", "at": now}))
    r.hset(f"{G}:worker:w1", mapping={
        "state": "running", "host": "loadgen-1", "pid": 20983, "index": 1, "users": 4, "requests": 1234,
        "failures": 2, "hb": now - 1,
    })  # fmt: skip
    r.set(f"{G}:hb:w1", now, ex=60)
    r.xadd(f"{G}:metrics", {"head": "{}", "data": "{}"})


def test_json_numbers_are_numbers_and_missing_is_null(redis_url: str, r: redis.Redis) -> None:
    write_live_gaggle(r, time.time())
    doc = status_json(redis_url)
    m = doc["manager"]
    assert m["alive"] is True and m["state"] == "running" and m["run_id"] == "3f0586edbddd"
    assert m["users"] == 4 and isinstance(m["users"], int)
    assert m["expect_workers"] == 1 and m["hatch_rate"] == 2.5
    assert isinstance(m["started_at"], float)
    assert m["run_time_s"] is None and m["ended_at"] is None and m["stop_reason"] is None
    assert m["unreadable"] == []
    [w] = doc["workers"]
    assert w["id"] == "w1" and w["alive"] is True and w["state"] == "running"
    assert (w["index"], w["users"], w["requests"], w["failures"], w["pid"]) == (1, 4, 1234, 2, 20983)
    assert all(isinstance(w[k], int) for k in ("index", "users", "requests", "failures"))
    assert isinstance(w["heartbeat_age_s"], float) and w["unreadable"] == []
    assert doc["metrics_entries"] == 1 and doc["unreadable"] == []
    assert doc["gaggle"] == "default" and doc["redis"] == redis_url


def test_an_empty_redis_is_a_gaggle_with_nothing_in_it(redis_url: str) -> None:
    doc = status_json(redis_url)
    assert doc["manager"]["alive"] is False and doc["manager"]["state"] is None
    assert doc["workers"] == [] and doc["metrics_entries"] == 0 and doc["unreadable"] == []
    code, out, _ = status(redis_url)
    assert code == 0 and "manager: not running; run -, state -" in out and "(no workers registered)" in out


def test_keys_of_the_wrong_type_are_marked_unreadable(redis_url: str, r: redis.Redis) -> None:
    now = time.time()
    write_live_gaggle(r, now)
    r.delete(f"{G}:run", f"{G}:workers", f"{G}:metrics")
    r.set(f"{G}:run", "not a hash")
    r.rpush(f"{G}:workers", "w1")
    r.hset(f"{G}:metrics", "not", "a stream")
    doc = status_json(redis_url)
    unreadable = {u["key"]: u["reason"] for u in doc["unreadable"]}
    assert set(unreadable) == {f"{G}:run", f"{G}:workers", f"{G}:metrics"}
    assert all("WRONGTYPE" in reason for reason in unreadable.values())
    assert doc["manager"]["alive"] is True and doc["manager"]["state"] is None
    assert doc["workers"] == [] and doc["metrics_entries"] is None
    code, out, err = status(redis_url)
    assert code == 0 and err == ""
    assert "metrics stream entries: unreadable" in out
    assert f"unreadable: {G}:run: WRONGTYPE" in out


def test_a_worker_hash_of_the_wrong_type_still_lists_the_worker(redis_url: str, r: redis.Redis) -> None:
    write_live_gaggle(r, time.time())
    r.hset(f"{G}:workers", "w2", "{}")
    r.sadd(f"{G}:worker:w2", "a", "set")
    doc = status_json(redis_url)
    w1, w2 = doc["workers"]
    assert w1["requests"] == 1234
    assert w2["id"] == "w2" and w2["alive"] is False and w2["requests"] is None and w2["heartbeat_age_s"] is None
    assert [u["key"] for u in doc["unreadable"]] == [f"{G}:worker:w2"]
    code, out, _ = status(redis_url)
    assert code == 0
    assert re.search(r"^\s+- .*- \(no heartbeat\).*w2$", out, re.M), out
    assert f"unreadable: {G}:worker:w2: WRONGTYPE" in out


def test_garbage_values_are_unreadable_fields(redis_url: str, r: redis.Redis) -> None:
    write_live_gaggle(r, time.time())
    garbage = {"users": "lots", "hatch_rate": "nan", "started_at": "yesterday", "expect_workers": "2.5"}
    r.hset(f"{G}:run", mapping=garbage)
    r.hset(f"{G}:worker:w1", mapping={"requests": "many", "index": "١", "hb": "inf"})
    r.set(f"{G}:manager", b"\xff\xfe not json")
    doc = status_json(redis_url)
    m = doc["manager"]
    assert sorted(m["unreadable"]) == ["expect_workers", "hatch_rate", "started_at", "users"]
    assert (m["users"], m["hatch_rate"], m["started_at"], m["state"]) == (None, None, None, "running")
    assert m["alive"] is False
    assert [u["key"] for u in doc["unreadable"]] == [f"{G}:manager"]
    [w] = doc["workers"]
    assert sorted(w["unreadable"]) == ["hb", "index", "requests"]
    assert (w["requests"], w["index"], w["heartbeat_age_s"], w["users"]) == (None, None, None, 4)
    code, out, _ = status(redis_url)
    assert code == 0
    assert "users unreadable, expect workers unreadable" in out
    assert "unreadable run fields: expect_workers, users, hatch_rate, started_at" in out
    assert re.search(r"^unreadable\s+loadgen-1\s+running\s+4\s+unreadable\s+2\s+-\s+w1$", out, re.M), out


def test_no_redis_listening_is_one_line_and_exit_1() -> None:
    port = free_port()
    code, out, err = status(f"redis://127.0.0.1:{port}/0", "--timeout", "1s")
    assert code == 1 and out == ""
    [line] = err.splitlines()
    assert line.startswith(f"Error: cannot reach Redis at redis://127.0.0.1:{port}/0"), line


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung Redis, a wrong service)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_timeout_bounds_a_redis_that_never_answers(silent_server: int) -> None:
    url = f"redis://:s3cret@127.0.0.1:{silent_server}/0"
    code, out, err = status(url, "--timeout", "1s")
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"Error: cannot reach Redis at redis://:***@127.0.0.1:{silent_server}/0: no answer within 1s"
    ]
    code, _, err = status(url)  # the default is 3s
    assert code == 1 and err.strip().endswith("no answer within 3s"), err


def test_timeout_reads_its_own_environment_variable(silent_server: int) -> None:
    """GOOSE_TIMEOUT is a run's per-request timeout; status has GOOSE_STATUS_TIMEOUT."""
    done = run_cli(["status", "--redis-url", f"redis://127.0.0.1:{silent_server}/0"],
                   env={"GOOSE_STATUS_TIMEOUT": "0.5s", "GOOSE_TIMEOUT": "90s"}, timeout=30)  # fmt: skip
    assert done.returncode == 1 and done.stderr.strip().endswith("no answer within 0.5s"), done.stderr
