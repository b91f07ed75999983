"""A gaggle of twenty Workers on one machine: the barrier, exact totals, and what grows.

benchmarks/bench_gaggle_scale.py measures 200 Workers; this keeps the properties that
must hold at any size honest in the suite: twenty Workers registering at once all get a
place, meet at the barrier, and their merged totals are what the target served; and a
Worker reads the ``shape`` key (which lists every Worker, so its size grows with the
gaggle) when it changed, not on every poll: counted with MONITOR on a private Redis.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest
import redis
from conftest import RedisFactory
from support import CountingTarget, ProcessTracker, RedisServer
from test_gaggle import Gaggle, finish

pytestmark = pytest.mark.slow

WORKERS = 20


class Monitor:
    """Every command Redis runs, counted by (command, key), from a MONITOR connection."""

    def __init__(self, server: RedisServer) -> None:
        self.client = redis.Redis(port=server.port, socket_timeout=10)
        self.seen: Counter[tuple[str, str]] = Counter()
        self.stop = threading.Event()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.started.wait(10), "MONITOR did not start"

    def _read(self) -> None:
        with self.client.monitor() as m:
            self.started.set()
            while not self.stop.is_set():
                try:
                    words = m.next_command()["command"].split(" ")
                except (redis.ConnectionError, redis.TimeoutError):
                    return
                key = words[1].strip('"') if len(words) > 1 else ""
                self.seen[(words[0].upper(), key)] += 1

    def close(self) -> None:
        self.stop.set()
        self.client.ping()  # one more command, so the reader wakes up and sees ``stop``
        self.thread.join(10)


def test_twenty_workers_meet_at_the_barrier_and_total_exactly(
    procs: ProcessTracker, redis_factory: RedisFactory, fresh_target: CountingTarget, tmp_path: Path
) -> None:
    server = redis_factory()
    gaggle = Gaggle(procs, server.url, tmp_path / "gaggle")
    monitor = Monitor(server)
    try:
        manager = gaggle.manager(fresh_target.url, WORKERS, WORKERS, "-r", str(WORKERS), "-t", "4s",
                                 "--no-reset-metrics")  # fmt: skip
        manager.stderr.wait_for(f"waiting for {WORKERS} workers")
        workers = [gaggle.worker("-q") for _ in range(WORKERS)]
        finish(manager, workers, timeout=120)
    finally:
        monitor.close()

    log = manager.stderr.text()
    assert f"all {WORKERS} workers ready" in log, log
    report = gaggle.report()
    assert sorted(w["index"] for w in report["workers"]) == list(range(1, WORKERS + 1))
    assert [w["users"] for w in report["workers"]] == [1] * WORKERS
    assert all(w["state"] == "done" and w["requests"] > 0 for w in report["workers"]), report["workers"]
    assert report["aggregated"]["count"] == fresh_target.completed_total() == fresh_target.total()
    assert report["verdict"]["exit_code"] == 0

    # The run hash is read on every poll; the shape only when its epoch grew (once, at the
    # start, and at most once more for a read that raced the Manager's heartbeat).
    shape_reads = monitor.seen[("GET", gaggle.key("shape"))]
    run_reads = monitor.seen[("HGETALL", gaggle.key("run"))]
    assert run_reads >= 2 * WORKERS, monitor.seen.most_common(20)
    assert WORKERS <= shape_reads <= 2 * WORKERS, (shape_reads, run_reads)
