"""Redis gone for good: past --redis-timeout both sides stop with one clear error line.

Also: a Worker's --request-log is written on the Worker's own host (it is not a
Manager-only option), with one JSON line per request it made.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import CountingTarget, ProcessTracker, RedisServer
from test_gaggle import Gaggle, wait_until

pytestmark = pytest.mark.slow


def test_redis_gone_past_the_deadline_stops_both_sides_with_a_clear_error(
    procs: ProcessTracker, redis_factory: object, target: CountingTarget, tmp_path: Path
) -> None:
    server: RedisServer = redis_factory()  # type: ignore[operator]
    gaggle = Gaggle(procs, server.url, tmp_path / "gone")
    log_path = tmp_path / "worker-requests.jsonl"
    manager = gaggle.manager(target.url, 2, 1, "-t", "60s", "--redis-timeout", "3s")
    worker = gaggle.worker("--redis-timeout", "3s", "--request-log", str(log_path))
    worker.stderr.wait_for(r"go-ahead received", 20)
    wait_until(lambda: target.total() > 20, 15, "load on the target")

    server.stop()

    assert manager.wait(30) == 1, manager.output()
    assert worker.wait(30) == 1, worker.output()
    manager_err = manager.stderr.text()
    assert "Traceback" not in manager_err and "Traceback" not in worker.stderr.text()
    error_lines = [line for line in manager_err.splitlines() if line.startswith("Error: ")]
    assert len(error_lines) == 1, manager_err
    assert "unreachable" in error_lines[0] and "giving up" in error_lines[0], error_lines
    assert "Redis unreachable" in manager_err  # the outage was logged when it began
    worker.stderr.wait_for(r"unreachable for \d+s; giving up", 1)

    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert len(lines) > 20, len(lines)
    assert {"elapsed", "method", "name", "status", "response_time_ms", "success", "user"} <= set(lines[0])
    assert all(entry["status"] == 200 and entry["success"] for entry in lines)
    assert min(entry["elapsed"] for entry in lines) >= -0.05  # counted from the gaggle's start
