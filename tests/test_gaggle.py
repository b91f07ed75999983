"""The Gaggle over Redis, end to end: a real redis-server, the real CLI as Manager and
Workers in their own processes, and a real HTTP target on loopback that counts hits.

The load test (written per test into ``tmp_path``) is fast: ``/`` and ``/any/x`` with
tiny waits, plus one ``/any/start`` per user as its ``on_start``. Every request carries
``x-user`` (the gaggle-wide user index), ``x-pid`` (the Worker's process id) and
``x-sent`` (the sender's clock), so the target can tell who sent what, and when.

Helpers here (``Gaggle``, ``write_load_test``...) are shared with test_gaggle_faults.py
and test_gaggle_netns.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from support import CliProcess, CountingTarget, ProcessTracker, RedisServer, run_cli
from support.procs import REPO_ROOT

pytestmark = pytest.mark.slow

DRUPAL_EXAMPLE = str(REPO_ROOT / "examples" / "drupal_loadtest.py")
FAST_WAIT = (0.005, 0.01)

LOAD_TEST = '''\
"""The gaggle tests' load test: fast transactions that say who sent them, and when."""

import os
import time

from goose_redis import Scenario, Transaction, User


def _headers(user: User) -> dict[str, str]:
    return {{"x-user": str(user.index), "x-pid": str(os.getpid()), "x-sent": repr(time.time())}}


async def start(user: User) -> None:
    await user.get("/any/start", name="start", headers=_headers(user))


async def index(user: User) -> None:
    await user.get("/", name="index", headers=_headers(user))


async def any_x(user: User) -> None:
    await user.get("/any/x", name="any x", headers=_headers(user))


fast = Scenario("Fast", wait={wait!r}).register(
    Transaction(start, name="start", on_start=True),
    Transaction(index, name="index", weight={weight}),
    Transaction(any_x, name="any x"),
)
'''


def write_load_test(
    directory: Path, name: str = "loadtest.py", wait: tuple[float, float] = FAST_WAIT, weight: int = 1
) -> Path:
    path = directory / name
    path.write_text(LOAD_TEST.format(wait=wait, weight=weight))
    return path


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` until it holds; AssertionError naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def worker_id(worker: CliProcess, timeout: float = 15.0) -> str:
    """The id a Worker registered under (``host-pid-hex``), from its log."""
    return worker.stderr.wait_for_match(r"registered as (\S+) in gaggle", timeout).group(1)


def worker_index(worker: CliProcess, timeout: float = 15.0) -> int:
    """The Worker's number in the gaggle, from its ``worker N connected`` log line."""
    return int(worker.stderr.wait_for_match(r"\[(\d+)\] worker \1 connected", timeout).group(1))


@dataclass
class Sent:
    user: int
    pid: int
    at: float
    path: str


def sent_requests(target: CountingTarget) -> list[Sent]:
    """What the target recorded, decoded from the load test's headers (oldest first)."""
    out = []
    for r in target.recent():
        h = {k.lower(): v for k, v in r.headers.items()}
        if "x-sent" in h:
            out.append(Sent(int(h["x-user"]), int(h["x-pid"]), float(h["x-sent"]), r.path))
    return out


@dataclass
class Gaggle:
    """Starts the Manager and Workers of one gaggle as CLI subprocesses."""

    procs: ProcessTracker
    redis_url: str
    workdir: Path
    name: str = "default"
    load_test: Path = field(init=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.load_test = write_load_test(self.workdir)

    @property
    def report_path(self) -> Path:
        return self.workdir / f"report-{self.name}.json"

    def manager(
        self, host: str, users: int, workers: int, *extra: str, env: dict[str, str] | None = None
    ) -> CliProcess:
        return self.procs.start(
            [
                "-f",
                str(self.load_test),
                "--manager",
                "--expect-workers",
                str(workers),
                "-u",
                str(users),
                "--host",
                host,
                "--redis-url",
                self.redis_url,
                "--gaggle",
                self.name,
                "-v",
                "--report-file",
                str(self.report_path),
                *extra,
            ],
            env,
        )

    def worker(self, *extra: str, load_test: Path | None = None, env: dict[str, str] | None = None) -> CliProcess:
        return self.procs.start(
            [
                "-f",
                str(load_test or self.load_test),
                "--worker",
                "--redis-url",
                self.redis_url,
                "--gaggle",
                self.name,
                "-v",
                *extra,
            ],
            env,
        )

    def report(self) -> dict[str, Any]:
        return dict(json.loads(self.report_path.read_text()))

    def key(self, suffix: str) -> str:
        return f"goose:{self.name}:{suffix}"


def finish(manager: CliProcess, workers: Iterable[CliProcess], timeout: float = 60.0, manager_code: int = 0) -> None:
    """Both sides end on their own with exit 0 (the Manager with ``manager_code``: 3 when it
    knows its totals are incomplete)."""
    code = manager.wait(timeout)
    assert code == manager_code, manager.output()
    for w in workers:
        assert w.wait(20) == 0, w.output()
    assert "Traceback" not in manager.stderr.text(), manager.output()


def aggregated(report: dict[str, Any]) -> int:
    return int(report["aggregated"]["count"])


def pid_of(worker_summary: dict[str, Any]) -> int:
    """Worker ids are ``host-pid-hex``."""
    return int(str(worker_summary["id"]).rsplit("-", 2)[1])


@pytest.fixture
def gaggle(procs: ProcessTracker, redis_url: str, tmp_path: Path) -> Gaggle:
    return Gaggle(procs, redis_url, tmp_path / "gaggle")


# -- the walk-through's validation errors --------------------------------------------------


def test_manager_without_expect_workers_fails_like_goose() -> None:
    result = run_cli(["-f", DRUPAL_EXAMPLE, "--manager"], timeout=60)
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines()[-1] == (
        'Error: InvalidOption { option: "--expect-workers", value: "0", '
        'detail: "The --expect-workers option must be set to at least 1." }'
    )


def test_expect_workers_above_the_default_user_count_fails() -> None:
    """Users default to the core count, so one Worker more than cores is too many."""
    too_many = (os.cpu_count() or 1) + 1
    result = run_cli(["-f", DRUPAL_EXAMPLE, "--manager", "--expect-workers", str(too_many)], timeout=60)
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines()[-1] == (
        f'Error: InvalidOption {{ option: "--expect-workers", value: "{too_many}", '
        'detail: "The --expect-workers option can not be set to a value larger than --users option." }'
    )


@pytest.mark.parametrize(
    ("args", "option", "detail"),
    [
        (["--manager", "--worker", "--expect-workers", "1"], "--worker", "can not be set together with the --manager"),
        (["--expect-workers", "2", "--host", "http://127.0.0.1:9"], "--expect-workers", "only for the --manager"),
        (["--worker", "-u", "3"], "--users", "a Worker takes it from the Manager"),
        (["--worker", "-r", "2"], "--hatch-rate", "a Worker takes it from the Manager"),
        (["--worker", "-t", "10s"], "--run-time", "a Worker takes it from the Manager"),
        (["--worker", "--host", "http://127.0.0.1:9"], "--host", "a Worker takes it from the Manager"),
        (["--worker", "--iterations", "3"], "--iterations", "a Worker takes it from the Manager"),
    ],
)
def test_gaggle_option_errors(args: list[str], option: str, detail: str) -> None:
    result = run_cli(["-f", DRUPAL_EXAMPLE, *args], timeout=60)
    assert result.returncode == 2, result
    line = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r'Error: InvalidOption \{ option: "[^"]+", value: "[^"]*", detail: "[^"]+" \}', line), line
    assert f'option: "{option}"' in line
    assert detail in line


# -- a normal run ----------------------------------------------------------------------------


def test_two_workers_share_eight_users_and_the_counts_match_the_target(
    gaggle: Gaggle, fresh_target: CountingTarget
) -> None:
    """The walk-through with -u 8 and 2 Workers: 4 users each, run time ends everything,
    and the merged totals equal what the target completed (nothing lost or doubled)."""
    manager = gaggle.manager(
        fresh_target.url, 8, 2, "-r", "40", "-t", "2s", "--no-reset-metrics", "--running-metrics", "1s"
    )
    manager.stderr.wait_for("waiting for 2 workers")
    workers = [gaggle.worker(), gaggle.worker()]
    finish(manager, workers)

    log = manager.stderr.text()
    assert f"connected to Redis at {gaggle.redis_url}" in log
    assert "gaggle 'default' on Redis" in log
    assert "each worker to start 4 users" in log
    assert "extra user" not in log
    assert re.search(r"worker 1 of 2 connected from \S+ \(\S+\)", log), log
    assert re.search(r"worker 2 of 2 connected from \S+ \(\S+\)", log), log
    assert "sending 4 users to worker 1" in log and "sending 4 users to worker 2" in log
    assert "all 2 workers ready" in log
    assert "gaggle distributed load test started" in log
    assert "all workers have exited" in log and re.search(r"printing metrics after \d+ seconds", log)
    assert "stopping the gaggle: run time elapsed" in log

    indexes = sorted(worker_index(w) for w in workers)
    assert indexes == [1, 2]
    for w in workers:
        n = worker_index(w)
        wlog = w.stderr.text()
        assert f"[{n}] worker {n} connected: 4 of 8 users" in wlog
        assert f"[{n}] 4 users initialized; waiting for the go-ahead" in wlog
        assert f"[{n}] received EXIT (run time elapsed)" in wlog

    report = gaggle.report()
    assert report["mode"] == "gaggle" and report["users"] == 8
    summaries = report["workers"]
    assert [s["index"] for s in summaries] == [1, 2]
    assert [s["users"] for s in summaries] == [4, 4]
    assert {pid_of(s) for s in summaries} == {w.pid for w in workers}
    # Merged totals: the per-worker rows add up to the aggregated row, which is what the target served.
    assert sum(s["requests"] for s in summaries) == aggregated(report)
    assert aggregated(report) == fresh_target.completed_total() == fresh_target.total()
    assert all(s["requests"] > 0 for s in summaries)
    # Each Worker's own count (its final log line) is what the Manager merged for it.
    for w in workers:
        mine = int(w.stderr.wait_for_match(r"final metrics: (\d+) requests").group(1))
        assert mine == next(s["requests"] for s in summaries if pid_of(s) == w.pid)
    # The target saw both Workers' processes.
    assert {s.pid for s in sent_requests(fresh_target)} == {w.pid for w in workers}
    tables = manager.stdout.text()
    assert "=== PER REQUEST METRICS ===" in tables
    assert "Mode:     gaggle (2 workers)" in tables
    # --running-metrics on the Manager shows the whole gaggle while it runs.
    running = tables.split("=== RUNNING METRICS", 1)
    assert len(running) == 2, tables
    assert "gaggle (2 workers)" in running[1]
    for s in summaries:
        assert f"{s['index']}: {s['id']}"[:24] in tables


def test_seven_users_split_four_and_three(gaggle: Gaggle, fresh_target: CountingTarget) -> None:
    """Users that do not divide: the first Worker gets the extra one, every user runs its
    iterations, and the totals are exact (7 users x (1 on_start + 2 x 2 requests))."""
    manager = gaggle.manager(fresh_target.url, 7, 2, "-r", "50", "--iterations", "2", "--no-reset-metrics")
    workers = [gaggle.worker(), gaggle.worker()]
    finish(manager, workers)

    log = manager.stderr.text()
    assert "each worker to start 3 users" in log
    assert "assigning 1 extra user to 1 worker" in log
    assert "every user ran 2 iteration(s)" in log
    report = gaggle.report()
    summaries = report["workers"]
    assert [s["users"] for s in summaries] == [4, 3]
    assert aggregated(report) == 7 * (1 + 2 * 2) == fresh_target.total() == fresh_target.completed_total()
    assert [s["requests"] for s in summaries] == [4 * 5, 3 * 5]
    # Worker 1 ran gaggle users 0, 2, 4, 6 and Worker 2 users 1, 3, 5.
    pid_by_index = {s["index"]: pid_of(s) for s in summaries}
    users_by_pid: dict[int, set[int]] = {}
    for s in sent_requests(fresh_target):
        users_by_pid.setdefault(s.pid, set()).add(s.user)
    assert users_by_pid == {pid_by_index[1]: {0, 2, 4, 6}, pid_by_index[2]: {1, 3, 5}}


def test_no_request_before_the_last_worker_is_ready(gaggle: Gaggle, fresh_target: CountingTarget) -> None:
    """The start barrier: with one of two Workers ready nothing is sent; once the second is
    ready both start at the shared start time, within moments of each other."""
    manager = gaggle.manager(fresh_target.url, 2, 2, "-r", "20", "--iterations", "3")
    first = gaggle.worker()
    first.stderr.wait_for("waiting for the go-ahead", 20)
    manager.stderr.wait_for(r"worker \d is ready \(1/2\)", 10)
    # One Worker is ready and waiting: the target must stay silent.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert fresh_target.total() == 0, "a request was sent before the gaggle was complete"
        time.sleep(0.05)
    second = gaggle.worker()
    second.stderr.wait_for("waiting for the go-ahead", 20)
    second_ready = time.time()
    finish(manager, [first, second])

    assert "all 2 workers ready: the gaggle starts at" in manager.stderr.text()
    sent = sent_requests(fresh_target)
    assert len(sent) == fresh_target.total() == 2 * (1 + 3 * 2)
    # The Manager sets the start one second after the last Worker is ready; 0.5 s of slack
    # covers this test noticing the log line late. A missing barrier would show the first
    # Worker's requests over two seconds earlier.
    assert min(s.at for s in sent) >= second_ready - 0.5, (min(s.at for s in sent), second_ready)
    # Both Workers start from the shared start time: user 1 follows user 0 by one launch
    # interval (0.05 s), whichever Worker noticed the go-ahead first.
    first_hit = {u: min(s.at for s in sent if s.user == u) for u in (0, 1)}
    assert abs(first_hit[1] - first_hit[0] - 0.05) < 0.25, first_hit
    assert {s.pid for s in sent} == {first.pid, second.pid}


def test_gaggle_hatch_rate_is_staggered_across_workers(gaggle: Gaggle, fresh_target: CountingTarget) -> None:
    """-r 4 with 2 Workers: each Worker launches a user every 0.5 s, offset by 0.25 s, so
    the gaggle as a whole launches 4 users per second, alternating Workers."""
    manager = gaggle.manager(fresh_target.url, 8, 2, "-r", "4", "--iterations", "1")
    workers = [gaggle.worker(), gaggle.worker()]
    finish(manager, workers)

    report = gaggle.report()
    pid_by_index = {s["index"]: pid_of(s) for s in report["workers"]}
    starts = {s.user: s for s in sent_requests(fresh_target) if s.path == "/any/start"}
    assert sorted(starts) == list(range(8))
    for user, s in starts.items():
        assert s.pid == pid_by_index[user % 2 + 1], (user, s)
    times = [starts[u].at for u in range(8)]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # Nominal 0.25 s between launches; generous bounds for a busy machine.
    assert all(0.1 < g < 0.45 for g in gaps), gaps
    assert 1.45 < times[-1] - times[0] < 2.1, times
    for k in (0, 1):  # each Worker on its own: every 0.5 s
        own = times[k::2]
        own_gaps = [b - a for a, b in zip(own, own[1:], strict=False)]
        assert all(0.35 < g < 0.7 for g in own_gaps), own_gaps


# -- stopping --------------------------------------------------------------------------------


def test_ctrl_c_on_a_worker_stops_the_whole_gaggle(gaggle: Gaggle, fresh_target: CountingTarget) -> None:
    manager = gaggle.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "60s", "--no-reset-metrics")
    workers = [gaggle.worker(), gaggle.worker()]
    by_index = {worker_index(w): w for w in workers}
    fresh_target.wait_for_hits(100, timeout=20)
    started = time.monotonic()
    by_index[1].send_signal(signal.SIGINT)

    # Worker 2 reads the stop request itself, or the run state the Manager set from it.
    by_index[2].stderr.wait_for(r"\[2\] received EXIT \((worker 1: )?SIGINT on worker 1", 10)
    finish(manager, workers, timeout=30)
    assert time.monotonic() - started < 15, "stopping took too long"
    assert "asked the gaggle to stop: SIGINT on worker 1" in by_index[1].stderr.text()
    assert "stopping the gaggle: SIGINT on worker 1\n" in manager.stderr.text() + "\n"
    assert "asked by" not in manager.stderr.text()
    assert "=== PER REQUEST METRICS ===" in manager.stdout.text()
    report = gaggle.report()
    assert aggregated(report) == fresh_target.completed_total() == fresh_target.total()
    assert sum(s["requests"] for s in report["workers"]) == aggregated(report)


def test_status_shows_a_live_gaggle_and_sigterm_on_the_manager_stops_it(
    gaggle: Gaggle, fresh_target: CountingTarget
) -> None:
    manager = gaggle.manager(fresh_target.url, 3, 2, "-r", "50", "-t", "60s", "--no-reset-metrics")
    workers = [gaggle.worker(), gaggle.worker()]
    ids = {worker_id(w) for w in workers}
    fresh_target.wait_for_hits(50, timeout=20)

    def status(*extra: str) -> str:
        result = run_cli(["status", "--redis-url", gaggle.redis_url, "--gaggle", gaggle.name, *extra], timeout=30)
        assert result.returncode == 0, result
        return result.stdout

    # Users and requests so far come from the Workers' heartbeats (every second).
    def launched() -> bool:
        workers = json.loads(status("--json"))["workers"]
        return sorted(w["users"] for w in workers) == [1, 2] and all(w["requests"] > 0 for w in workers)

    wait_until(launched, 15, "every user launched and counting in the status")
    text = status()
    assert "gaggle 'default' on redis://127.0.0.1:" in text
    assert re.search(r"manager: alive; run \w+, state running, users 3, expect workers 2", text), text
    for wid in ids:
        assert wid in text
    doc = json.loads(status("--json"))
    assert doc["manager"]["alive"] is True and doc["manager"]["state"] == "running"
    assert {w["id"] for w in doc["workers"]} == ids
    assert sorted(w["index"] for w in doc["workers"]) == [1, 2]  # JSON numbers, not strings
    assert sorted(w["users"] for w in doc["workers"]) == [1, 2]
    assert all(w["state"] == "running" and w["alive"] is True for w in doc["workers"])
    assert all(w["heartbeat_age_s"] is not None and w["heartbeat_age_s"] < 5 for w in doc["workers"])
    so_far = sum(w["requests"] for w in doc["workers"])
    wait_until(
        lambda: sum(w["requests"] for w in json.loads(status("--json"))["workers"]) > so_far, 10, "requests grow"
    )

    manager.send_signal(signal.SIGTERM)
    for w in workers:
        w.stderr.wait_for(r"received EXIT \(SIGTERM on the manager\)", 10)
    finish(manager, workers, timeout=30)
    report = gaggle.report()
    assert aggregated(report) == fresh_target.completed_total()
    after = json.loads(status("--json"))
    assert after["manager"]["alive"] is False and after["manager"]["state"] == "done"
    assert after["workers"] == []  # Workers unregister when they exit


# -- sharing Redis ----------------------------------------------------------------------------


def test_two_gaggles_share_one_redis(
    procs: ProcessTracker, redis_url: str, tmp_path: Path, fresh_target: CountingTarget, target: CountingTarget
) -> None:
    a = Gaggle(procs, redis_url, tmp_path / "a", name="a")
    b = Gaggle(procs, redis_url, tmp_path / "b", name="b")
    ma = a.manager(fresh_target.url, 4, 2, "-r", "50", "-t", "2s", "--no-reset-metrics")
    mb = b.manager(target.url, 2, 1, "-r", "50", "-t", "2s", "--no-reset-metrics")
    wa = [a.worker(), a.worker()]
    wb = [b.worker()]
    finish(ma, wa)
    finish(mb, wb)
    ra, rb = a.report(), b.report()
    assert {pid_of(s) for s in ra["workers"]} == {w.pid for w in wa}
    assert {pid_of(s) for s in rb["workers"]} == {w.pid for w in wb}
    assert "gaggle 'a'" in ma.stderr.text() and "gaggle 'b'" in mb.stderr.text()
    assert aggregated(ra) == fresh_target.completed_total()
    assert aggregated(rb) == target.completed_total()


def test_password_in_the_redis_url_works_and_is_never_printed(
    procs: ProcessTracker, redis_factory: Callable[..., RedisServer], tmp_path: Path, fresh_target: CountingTarget
) -> None:
    secret = "s3cret"
    server = redis_factory(["--requirepass", secret], client_kwargs={"password": secret})
    url = server.url_with(password=secret)
    g = Gaggle(procs, url, tmp_path / "pw")
    manager = g.manager(fresh_target.url, 2, 1, "-r", "50", "-t", "1s", "--no-reset-metrics")
    worker = g.worker()
    finish(manager, [worker])
    status = run_cli(["status", "--redis-url", url], timeout=30)
    assert status.returncode == 0, status
    # A wrong password is a clear, immediate error (not retried as an outage).
    started = time.monotonic()
    wrong = run_cli(["-f", str(g.load_test), "--worker", "--redis-url", server.url_with(password="n0pe")], timeout=60)
    assert wrong.returncode != 0
    assert time.monotonic() - started < 20
    assert "refused" in wrong.stderr or "auth" in wrong.stderr.lower(), wrong.stderr

    redacted = f"redis://:***@127.0.0.1:{server.port}/0"
    assert f"connected to Redis at {redacted}" in manager.stderr.text()
    assert f"connected to Redis at {redacted}" in worker.stderr.text()
    everything = "\n".join(
        [
            manager.output(),
            worker.output(),
            status.stdout,
            status.stderr,
            wrong.stdout,
            wrong.stderr,
            g.report_path.read_text(),
        ]
    )
    assert secret not in everything
    assert "n0pe" not in everything
    assert aggregated(g.report()) == fresh_target.completed_total() > 0


# -- joining -------------------------------------------------------------------------------------


def test_a_worker_beyond_expect_workers_is_told_to_exit(gaggle: Gaggle, fresh_target: CountingTarget) -> None:
    manager = gaggle.manager(fresh_target.url, 2, 1, "-r", "50", "-t", "3s")
    member = gaggle.worker()
    manager.stderr.wait_for("all 1 workers ready", 20)
    extra = gaggle.worker()
    assert extra.wait(15) == 0, extra.output()
    assert "the manager told this worker to exit: the gaggle already has its 1 workers" in extra.stderr.text()
    finish(manager, [member])
    assert "is beyond --expect-workers: told to exit" in manager.stderr.text()
    assert [pid_of(s) for s in gaggle.report()["workers"]] == [member.pid]


def test_a_worker_started_before_the_manager_waits_for_it(gaggle: Gaggle, fresh_target: CountingTarget) -> None:
    worker = gaggle.worker()
    worker.stderr.wait_for("no manager in gaggle 'default' yet; waiting for it", 15)
    manager = gaggle.manager(fresh_target.url, 2, 1, "-r", "50", "-t", "1s", "--no-reset-metrics")
    finish(manager, [worker])
    report = gaggle.report()
    assert [pid_of(s) for s in report["workers"]] == [worker.pid]
    assert aggregated(report) == fresh_target.completed_total() > 0


def test_a_worker_with_a_different_load_test_is_refused(gaggle: Gaggle, fresh_target: CountingTarget) -> None:
    other = write_load_test(gaggle.workdir, "other.py", weight=2)
    manager = gaggle.manager(fresh_target.url, 2, 1, "-r", "50", "-t", "1s")
    stranger = gaggle.worker(load_test=other)
    assert stranger.wait(20) != 0, stranger.output()
    assert "refused by the manager: its load test differs from the manager's" in stranger.stderr.text()
    assert "--no-hash-check" in stranger.stderr.text()
    assert "refused worker" in manager.stderr.text()
    # The gaggle still takes a matching Worker and runs.
    member = gaggle.worker()
    finish(manager, [member])
    assert [pid_of(s) for s in gaggle.report()["workers"]] == [member.pid]
    assert fresh_target.total() > 0


def test_no_hash_check_lets_a_different_load_test_join(gaggle: Gaggle, fresh_target: CountingTarget) -> None:
    other = write_load_test(gaggle.workdir, "other.py", weight=2)
    manager = gaggle.manager(fresh_target.url, 2, 1, "-r", "50", "-t", "1s", "--no-hash-check", "--no-reset-metrics")
    worker = gaggle.worker(load_test=other)
    finish(manager, [worker])
    assert aggregated(gaggle.report()) == fresh_target.completed_total() > 0


def _acl_setuser_from_the_docs() -> list[str]:
    """The ``ACL SETUSER goose ...`` line of docs/redis-keys.md, as arguments."""
    doc = (REPO_ROOT / "docs" / "redis-keys.md").read_text()
    line = next(line for line in doc.splitlines() if line.startswith("ACL SETUSER goose "))
    return line.split()[2:]


def test_the_documented_acl_user_can_run_a_gaggle(
    procs: ProcessTracker, redis_factory: Callable[..., RedisServer], tmp_path: Path, fresh_target: CountingTarget
) -> None:
    """docs/redis-keys.md's ACL user (only the gaggle's commands, keys and channels) is enough."""
    server = redis_factory()
    admin = server.client()
    rules = _acl_setuser_from_the_docs()
    assert rules[0] == "goose" and ">change-me" in rules
    assert admin.execute_command("ACL", "SETUSER", *rules) in (b"OK", "OK", True)
    url = server.url_with(username="goose", password="change-me")
    g = Gaggle(procs, url, tmp_path / "acl")
    manager = g.manager(fresh_target.url, 2, 1, "-r", "50", "-t", "1s", "--no-reset-metrics")
    worker = g.worker()
    finish(manager, [worker])
    for p in (manager, worker):
        assert "refused" not in p.stderr.text() and "NOPERM" not in p.stderr.text(), p.output()
    assert "connected to Redis at redis://goose:***@127.0.0.1:" in manager.stderr.text()
    assert aggregated(g.report()) == fresh_target.completed_total() > 0
    status = run_cli(["status", "--redis-url", url], timeout=30)
    assert status.returncode == 0 and "change-me" not in status.stdout + status.stderr, status
    # The user really is limited: nothing outside goose:*.
    limited = server.client(username="goose", password="change-me")
    with pytest.raises(redis.exceptions.NoPermissionError):
        limited.set("other:key", "x")
    with pytest.raises(redis.exceptions.NoPermissionError):
        limited.execute_command("FLUSHALL")


def test_a_stop_request_written_with_redis_cli_stops_the_gaggle(
    gaggle: Gaggle, redis_server: RedisServer, fresh_target: CountingTarget
) -> None:
    """The docs' recipe: SET the stop key (NX) and PUBLISH exit on the control channel."""
    manager = gaggle.manager(fresh_target.url, 2, 2, "-r", "50", "-t", "60s", "--no-reset-metrics")
    workers = [gaggle.worker(), gaggle.worker()]
    fresh_target.wait_for_hits(50, timeout=20)
    r = redis_server.client()
    request = '{"v": 2, "by": "operator", "reason": "stopped with redis-cli", "at": 0}'
    assert r.set(gaggle.key("stop"), request, nx=True, ex=3600)
    r.publish(gaggle.key("control"), "exit")
    finish(manager, workers, timeout=30)
    assert "stopping the gaggle: stopped with redis-cli (asked by operator)" in manager.stderr.text()
    for w in workers:
        assert "received EXIT" in w.stderr.text()
    assert aggregated(gaggle.report()) == fresh_target.completed_total()
