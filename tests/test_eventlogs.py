"""Goose's other logs: --transaction-log, --scenario-log and --error-log (JSON lines), from real
runs against a real HTTP target, standalone and on a Gaggle Worker; their paths are checked
before anything starts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from support import CountingTarget, ProcessTracker, run_cli
from test_cli_options import assert_invalid

LOAD_TEST = """
from goose_redis import Scenario, Transaction, User


async def ok(user: User) -> None:
    await user.get("/any/ok", name="ok")


async def bad(user: User) -> None:
    await user.get("/status/500", name="broken")


async def boom(user: User) -> None:
    await user.get("/any/boom", name="boom")
    raise ValueError("no token on the page")


mixed = Scenario("Mixed").register(
    Transaction(ok, name="ok page", sequence=1),
    Transaction(bad, name="bad page", sequence=2),
    Transaction(boom, name="boom page", sequence=3),
)
"""

USERS, ITERATIONS = 2, 2


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def load_test(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.py"
    path.write_text(LOAD_TEST, encoding="utf-8")
    return path


def check_error_log(entries: list[dict[str, Any]], target: CountingTarget) -> None:
    requests = [e for e in entries if e["kind"] == "request"]
    raised = [e for e in entries if e["kind"] == "exception"]
    assert len(requests) == len(raised) == USERS * ITERATIONS
    for e in requests:
        assert (e["method"], e["name"], e["status"], e["error"]) == ("GET", "broken", 500, "500 Internal Server Error")
        assert e["url"] == f"{target.url}/status/500" and e["transaction"] == "bad page"
        assert e["scenario"] == "Mixed" and e["response_time_ms"] > 0 and e["elapsed"] >= 0
    for e in raised:
        assert (e["transaction"], e["error"]) == ("boom page", "ValueError: no token on the page")
        assert e["run_time_ms"] > 0 and e["elapsed"] >= 0
    assert {e["user"] for e in entries} == set(range(USERS))


def test_standalone_writes_the_three_logs(load_test: Path, fresh_target: CountingTarget, tmp_path: Path) -> None:
    tx_log, sc_log, err_log = tmp_path / "tx.jsonl", tmp_path / "sc.jsonl", tmp_path / "err.jsonl"
    done = run_cli(
        ["-f", str(load_test), "--host", fresh_target.url, "-u", str(USERS), "-r", "50", "--iterations",
         str(ITERATIONS), "-q", "--transaction-log", str(tx_log), "--scenario-log", str(sc_log),
         "--error-log", str(err_log)],
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    tx = read_jsonl(tx_log)
    assert len(tx) == USERS * ITERATIONS * 3
    assert set(tx[0]) == {"elapsed", "user", "scenario", "scenario_index", "transaction", "transaction_index",
                          "run_time_ms", "success", "error"}  # fmt: skip
    by_name = {name: [e for e in tx if e["transaction"] == name] for name in ("ok page", "bad page", "boom page")}
    assert all(len(v) == USERS * ITERATIONS for v in by_name.values())
    assert all(e["success"] and e["error"] is None and e["transaction_index"] == 0 for e in by_name["ok page"])
    assert all(not e["success"] and e["error"] is None for e in by_name["bad page"])  # failed by its request
    assert all(e["error"] == "ValueError: no token on the page" for e in by_name["boom page"])
    assert {e["user"] for e in tx} == {0, 1} and all(e["run_time_ms"] > 0 and e["elapsed"] >= 0 for e in tx)

    sc = read_jsonl(sc_log)
    assert len(sc) == USERS * ITERATIONS
    assert all(e["scenario"] == "Mixed" and e["scenario_index"] == 0 and e["success"] is False for e in sc)
    assert sorted(e["user"] for e in sc) == [0, 0, 1, 1]
    # A user's iterations span its transactions.
    for user in (0, 1):
        spent = sum(t["run_time_ms"] for t in tx if t["user"] == user)
        assert sum(e["run_time_ms"] for e in sc if e["user"] == user) >= spent

    check_error_log(read_jsonl(err_log), fresh_target)


def test_a_worker_writes_its_logs_on_its_own_host(
    load_test: Path, fresh_target: CountingTarget, redis_url: str, procs: ProcessTracker, tmp_path: Path
) -> None:
    err_log, tx_log = tmp_path / "worker-errors.jsonl", tmp_path / "worker-tx.jsonl"
    gaggle = ["--redis-url", redis_url, "--gaggle", f"evlog{os.getpid()}"]
    manager = procs.start(["-f", str(load_test), "--manager", "--expect-workers", "1", "--host", fresh_target.url,
                           "-u", str(USERS), "-r", "50", "--iterations", str(ITERATIONS), "-q", *gaggle])  # fmt: skip
    # Goose's short forms: -E for --error-log, -T for --transaction-log.
    worker = procs.start(["-f", str(load_test), "--worker", "-q", "-E", str(err_log), "-T", str(tx_log), *gaggle])
    assert manager.wait(60) == 0, manager.output()
    assert worker.wait(30) == 0, worker.output()
    check_error_log(read_jsonl(err_log), fresh_target)
    assert len(read_jsonl(tx_log)) == USERS * ITERATIONS * 3


@pytest.mark.parametrize("option", ["--transaction-log", "--scenario-log", "--error-log", "--request-log"])
def test_log_paths_are_checked_before_the_run(
    option: str, load_test: Path, fresh_target: CountingTarget, tmp_path: Path
) -> None:
    base = ["-f", str(load_test), "--host", fresh_target.url, "-u", "1", "--iterations", "1"]
    missing = str(tmp_path / "no-such-dir" / "x.jsonl")
    assert_invalid([*base, option, missing], option, "does not exist", missing)
    assert_invalid([*base, option, str(tmp_path)], option, "names a directory", str(tmp_path))
    # Two logs in one file: the second (in the order of --help) is named.
    other = "--request-log" if option != "--request-log" else "--error-log"
    same = str(tmp_path / "same.jsonl")
    named = "--error-log" if option == "--request-log" else option
    assert_invalid([*base, option, same, other, same], named, "give each output its own file", same)
    assert_invalid(["-f", str(load_test), "--host", fresh_target.url, "-u", "1", "--manager", "--expect-workers",
                    "1", option, same], option, "give " + option + " to each Worker")  # fmt: skip
    assert fresh_target.total() == 0
    assert not list(tmp_path.glob("*.jsonl"))  # checking created nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_log_directory(load_test: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert_invalid(["-f", str(load_test), "--host", "http://127.0.0.1:9", "--error-log", str(locked / "e.jsonl")],
                   "--error-log", "not writable")  # fmt: skip
