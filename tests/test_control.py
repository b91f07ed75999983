"""``goose-redis control`` against real gaggles: a real redis-server, a Manager and two Workers
as CLI processes, and a real target that sees which gaggle user sent each request (``x-user``).

Each command is proven by what the target sees and by the totals: the merged report counts
exactly what the target completed. Each refusal is one line with its exit code.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from support import CountingTarget, ProcessTracker, RedisServer, run_cli
from test_gaggle import Gaggle, aggregated, finish, sent_requests, wait_until, worker_index, write_load_test

pytestmark = pytest.mark.slow

HOST = socket.gethostname()
BY = f"control on {HOST}"
WAIT = (0.02, 0.04)  # a few dozen requests per user and second: enough to see, light on 2 cores


def control(g: Gaggle, *args: str, timeout: str = "5s") -> subprocess.CompletedProcess[str]:
    return run_cli(["control", "--redis-url", g.redis_url, "--gaggle", g.name, "--timeout", timeout, *args],
                   timeout=60)  # fmt: skip


def applied(result: subprocess.CompletedProcess[str]) -> str:
    """The one line of an applied command (exit 0)."""
    assert result.returncode == 0, result
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and result.stderr.strip() == "", result
    return lines[0]


def error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one line of a refusal (exit 1) or a bad value (exit 2), on stderr."""
    assert result.returncode == code, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and result.stdout.strip() == "", result
    return lines[0]


def users_lately(target: CountingTarget, last: int = 150) -> set[int]:
    return {s.user for s in sent_requests(target)[-last:]}


def slow_gaggle(g: Gaggle) -> Gaggle:
    g.load_test = write_load_test(g.workdir, wait=WAIT)
    return g


@pytest.fixture
def gaggle(procs: ProcessTracker, redis_url: str, tmp_path: Path) -> Gaggle:
    return slow_gaggle(Gaggle(procs, redis_url, tmp_path / "gaggle"))


def test_users_up_and_down_at_the_hatch_rate_then_stop(gaggle: Gaggle, fresh_target: CountingTarget) -> None:
    report_html = gaggle.workdir / "report.html"
    manager = gaggle.manager(fresh_target.url, 2, 2, "-r", "20", "-t", "120s", "--no-reset-metrics",
                             "--report-file", str(report_html))  # fmt: skip
    workers = [gaggle.worker(), gaggle.worker()]
    wait_until(lambda: users_lately(fresh_target) == {0, 1}, 30, "both users running")

    assert applied(control(gaggle, "users", "6")) == "gaggle 'default': users -> 6 at 20/s"
    wait_until(lambda: users_lately(fresh_target, 300) == set(range(6)), 15, "six users sending")
    for w in workers:  # every Worker logs the change it follows
        n = worker_index(w)
        w.stderr.wait_for(rf"NOTICE \[{n}\] users -> 6 at 20/s \(by {BY}\): 3 of 6 users are ours", 10)
    assert "Error: the gaggle already started" == error_line(control(gaggle, "start"), 1)

    assert applied(control(gaggle, "hatch-rate", "2")) == "gaggle 'default': hatch rate -> 2/s"
    assert applied(control(gaggle, "users", "2")) == "gaggle 'default': users -> 2 at 2/s"
    wait_until(lambda: users_lately(fresh_target, 100) == {0, 1}, 20, "only users 0 and 1 left")
    last_seen = {u: max(s.at for s in sent_requests(fresh_target) if s.user == u) for u in range(2, 6)}
    # Newest first, one every half second (2/s): user 5 stopped before 4, 4 before 3, 3 before 2.
    assert last_seen[5] < last_seen[4] < last_seen[3] < last_seen[2], last_seen

    sent = time.time()
    assert applied(control(gaggle, "users", "6")) == "gaggle 'default': users -> 6 at 2/s"
    wait_until(lambda: users_lately(fresh_target, 300) == set(range(6)), 20, "six users again")
    starts = {s.user: s.at for s in sent_requests(fresh_target) if s.path == "/any/start" and s.at > sent}
    assert sorted(starts) == [2, 3, 4, 5], starts
    # Launched at the new hatch rate: 1.5 s from the first to the last (20/s would take 0.15 s).
    assert starts[5] - starts[2] > 1.0, starts

    assert applied(control(gaggle, "stop")) == "gaggle 'default': stopping the gaggle"
    finish(manager, workers, timeout=60)
    log = manager.stderr.text()
    assert f"control: users -> 6 at 20/s (by {BY})" in log
    assert f"stopping the gaggle: stop command (by {BY})" in log
    report = gaggle.report()
    assert aggregated(report) == fresh_target.completed_total() == fresh_target.total()
    assert [(e["command"], e["value"], e["by"]) for e in report["events"]] == [
        ("users", "6", BY), ("hatch-rate", "2", BY), ("users", "2", BY), ("users", "6", BY), ("stop", None, BY),
    ]  # fmt: skip
    assert all(0 < e["t"] < 120 for e in report["events"])
    assert report["users"] == 6  # the peak the shape reached
    html = report_html.read_text()
    assert html.count('class="marker"') >= 3 * 4  # the events, on every chart
    assert "Control events" in html and BY in html


def test_no_autostart_holds_the_barrier_until_start(gaggle: Gaggle, fresh_target: CountingTarget) -> None:
    manager = gaggle.manager(fresh_target.url, 2, 2, "-r", "20", "-t", "120s", "--no-reset-metrics", "--no-autostart")
    workers = [gaggle.worker(), gaggle.worker()]
    manager.stderr.wait_for(r"all 2 workers ready: waiting for `goose-redis control start` \(--no-autostart\)", 30)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # held at the barrier: nothing is sent
        assert fresh_target.total() == 0
        time.sleep(0.05)

    # Before the start a command changes what starts.
    assert applied(control(gaggle, "users", "4")) == "gaggle 'default': users -> 4 from the start"
    assert applied(control(gaggle, "start")) == "gaggle 'default': starting the gaggle (2 workers ready)"
    assert error_line(control(gaggle, "start"), 1) == "Error: the gaggle already started"
    for w in workers:
        w.stderr.wait_for(rf"starting as steered before the start: users -> 4 from the start \(by {BY}\)", 15)
    wait_until(lambda: users_lately(fresh_target, 300) == {0, 1, 2, 3}, 20, "the four users sending")

    sent = time.monotonic()
    assert applied(control(gaggle, "run-time", "2s")) == "gaggle 'default': run time -> 2s from now"
    manager.stderr.wait_for("stopping the gaggle: run time elapsed", 30)
    assert time.monotonic() - sent > 1.9  # counted from when the Manager applied it, after we sent it
    finish(manager, workers, timeout=60)
    report = gaggle.report()
    assert aggregated(report) == fresh_target.completed_total() == fresh_target.total()
    assert [(e["command"], e["value"]) for e in report["events"]] == [("users", "4"), ("start", None),
                                                                       ("run-time", "2s")]  # fmt: skip
    assert report["users"] == 4 and [w["users"] for w in report["workers"]] == [2, 2]
    # The run is over: a command is refused at once, without waiting for a reply.
    assert error_line(control(gaggle, "users", "3"), 1) == "Error: the run is already over (run time elapsed)"


def test_throttle_then_a_test_plan_that_ends_the_run(gaggle: Gaggle, fresh_target: CountingTarget) -> None:
    manager = gaggle.manager(fresh_target.url, 4, 2, "-r", "20", "-t", "120s", "--no-reset-metrics")
    workers = [gaggle.worker(), gaggle.worker()]
    wait_until(lambda: users_lately(fresh_target, 300) == {0, 1, 2, 3}, 30, "four users sending")

    def rate_over(seconds: float) -> float:
        before = fresh_target.total()
        time.sleep(seconds)  # a measurement window, not synchronisation
        return (fresh_target.total() - before) / seconds

    free = rate_over(2.0)
    assert applied(control(gaggle, "throttle", "10")) == "gaggle 'default': throttle -> 10 requests/s"
    for w in workers:
        w.stderr.wait_for(r"throttle -> 10 requests/s \(by", 10)
    time.sleep(1.0)  # requests already past the throttle finish
    throttled = rate_over(3.0)
    assert free > 30, free  # unthrottled, four users send far more than 10/s
    assert throttled <= 10 * 1.5, (free, throttled)

    assert applied(control(gaggle, "test-plan", "3,1s;3,1s;0,0s")) == "gaggle 'default': test plan -> 3,1s;3,1s;0,0s"
    manager.stderr.wait_for("stopping the gaggle: run time elapsed", 30)  # the plan's end is the run's
    finish(manager, workers, timeout=60)
    report = gaggle.report()
    assert aggregated(report) == fresh_target.completed_total() == fresh_target.total()
    assert report["throttle_requests"] == 10
    assert [e["command"] for e in report["events"]] == ["throttle", "test-plan"]
    steps = [(s["action"], s["from"], s["to"]) for s in report["plan"]]
    assert ("decrease", 4, 3) in steps and ("decrease", 3, 0) in steps, steps


# -- refusals: one line each, and nothing sent when the value is bad ---------------------------


@pytest.mark.parametrize(
    ("args", "option", "detail"),
    [
        (["users", "abc"], "users", "The users command takes a whole number, 0 to 1,000,000."),
        (["users", "1.5"], "users", "The users command takes a whole number, 0 to 1,000,000."),
        (["users", "-3"], "users", "The users command takes a whole number, 0 to 1,000,000."),  # a value, not an option
        (["users"], "users", "The users command needs a value, like 10."),
        (["hatch-rate", "0"], "hatch-rate", "The hatch-rate command takes a number from 0.001 to 1,000,000."),
        (["run-time", "soon"], "run-time", "The run-time command takes a time like 30s, 2m or 1h30m"),
        (["throttle", "nan"], "throttle", "The throttle command takes a number from 0.001 to 1,000,000."),
        (["test-plan", "10"], "test-plan", "Each step is USERS,TIME (like 10,1m)"),
        (["stop", "now"], "stop", "The stop command takes no value."),
        (["pause"], "COMMAND", "No such command: use one of users, hatch-rate, run-time, throttle, test-plan, start"),
        (["--gaggle", "a:b", "stop"], "--gaggle", "The gaggle name must be 1 to 64"),
        (["--redis-url", "http://x", "stop"], "--redis-url", ""),
        (["--timeout", "0", "stop"], "--timeout", ""),
    ],
)
def test_a_bad_value_is_one_line_and_never_reaches_redis(
    redis_url: str, redis_server: RedisServer, args: list[str], option: str, detail: str
) -> None:
    result = run_cli(["control", "--redis-url", redis_url, *args], timeout=60)
    line = error_line(result, 2)
    assert line.startswith(f'Error: InvalidOption {{ option: "{option}", value: "'), line
    assert detail in line
    assert redis_server.client().keys("*") == []


def test_refusals_without_a_manager_answer_at_once(redis_url: str, redis_server: RedisServer, tmp_path: Path) -> None:
    r = redis_server.client()
    g = Gaggle(ProcessTracker(), redis_url, tmp_path / "g", name="lonely")

    def refused(*args: str, timeout: str = "30s") -> str:
        started = time.monotonic()
        line = error_line(control(g, *args, timeout=timeout), 1)
        assert time.monotonic() - started < 10, "a refusal without a Manager must not wait for a reply"
        return line

    assert refused("users", "3") == f"Error: no such gaggle 'lonely' on {redis_url}"
    r.hset(g.key("run"), mapping={"state": "running", "run_id": "0123456789ab"})
    assert refused("stop") == f"Error: no live manager in gaggle 'lonely' on {redis_url}"
    r.hset(g.key("run"), mapping={"state": "done", "stop_reason": "run time elapsed"})
    assert refused("users", "3") == "Error: the run is already over (run time elapsed)"
    assert r.exists(g.key("commands")) == 0

    # A Manager's heartbeat with nobody behind it: the command is sent, no answer comes.
    r.hset(g.key("run"), mapping={"state": "running", "stop_reason": ""})
    r.set(g.key("manager"), '{"v": 2, "run_id": "0123456789ab", "at": 1}', ex=60)
    line = error_line(control(g, "users", "3", timeout="1s"), 1)
    assert line == ("Error: no answer from the manager of gaggle 'lonely' within 1s "
                    "(it applies a command at most 30s old)")
    assert r.xlen(g.key("commands")) == 1


def test_start_and_stop_while_a_manager_waits_for_workers(gaggle: Gaggle, fresh_target: CountingTarget) -> None:
    """Without --no-autostart the gaggle starts by itself; the Manager's own checks answer with
    exit 2; a stop before the start ends the run cleanly."""
    manager = gaggle.manager(fresh_target.url, 2, 2, "-t", "10s", "-r", "0.01")
    manager.stderr.wait_for("waiting for 2 workers", 20)  # logged after its first heartbeat
    line = error_line(control(gaggle, "start"), 1)
    assert line == "Error: the gaggle starts by itself once its 2 workers are ready (no --no-autostart)"
    # Fine where it was typed, but at this gaggle's hatch rate a ramp-up of 3 years: the Manager says no.
    line = error_line(control(gaggle, "users", "1000000"), 2)
    assert line.startswith('Error: InvalidOption { option: "users", value: "1000000", detail: "The users command '
                           'would take the run out of bounds'), line  # fmt: skip
    assert applied(control(gaggle, "stop")) == "gaggle 'default': stopping the gaggle"
    assert manager.wait(30) == 0, manager.output()
    assert f"the gaggle never started: stop command (by {BY})" in manager.stderr.text()
    assert fresh_target.total() == 0


def _acl_rules() -> list[str]:
    from test_gaggle import _acl_setuser_from_the_docs

    return _acl_setuser_from_the_docs()


def test_the_documented_acl_user_can_steer(
    procs: ProcessTracker, redis_factory: Callable[..., RedisServer], tmp_path: Path, fresh_target: CountingTarget
) -> None:
    server = redis_factory()
    assert server.client().execute_command("ACL", "SETUSER", *_acl_rules()) in (b"OK", "OK", True)
    url = server.url_with(username="goose", password="change-me")
    g = slow_gaggle(Gaggle(procs, url, tmp_path / "acl"))
    manager = g.manager(fresh_target.url, 1, 1, "-r", "20", "-t", "60s", "--no-reset-metrics")
    worker = g.worker()
    fresh_target.wait_for_hits(20, timeout=30)
    assert applied(control(g, "users", "2")) == "gaggle 'default': users -> 2 at 20/s"
    assert applied(control(g, "stop")) == "gaggle 'default': stopping the gaggle"
    finish(manager, [worker], timeout=60)
    for p in (manager, worker):
        assert "NOPERM" not in p.stderr.text() and "refused a command" not in p.stderr.text(), p.output()
    assert [e["command"] for e in g.report()["events"]] == ["users", "stop"]
    assert len(server.client().lrange(g.key("events"), 0, -1)) == 2
    limited = server.client(username="goose", password="change-me")
    with pytest.raises(redis.exceptions.NoPermissionError):
        limited.execute_command("FLUSHALL")


SECRET = "control-test-secret-0123456789abcdef"


def test_a_gaggle_with_a_secret_takes_only_signed_commands_and_each_once(
    gaggle: Gaggle, fresh_target: CountingTarget, redis_server: RedisServer
) -> None:
    """Steering needs the secret (watching does not): an unsigned command, a wrong secret and a
    replayed signed command are each refused with one line; the signed one is applied once."""
    env = {"GOOSE_GAGGLE_SECRET": SECRET}
    manager = gaggle.manager(fresh_target.url, 2, 2, "-r", "20", "-t", "120s", "--no-reset-metrics", env=env)
    workers = [gaggle.worker(env=env), gaggle.worker(env=env)]
    wait_until(lambda: users_lately(fresh_target) == {0, 1}, 30, "both users running")

    line = error_line(control(gaggle, "users", "4"), 1)
    assert "this gaggle has a secret: give --gaggle-secret to steer it" in line
    wrong = run_cli(["control", "--redis-url", gaggle.redis_url, "users", "4"],
                    env={"GOOSE_GAGGLE_SECRET": "not-the-secret-of-this-gaggle"}, timeout=60)  # fmt: skip
    assert "this gaggle has a secret" in error_line(wrong, 1)
    signed = run_cli(["control", "--redis-url", gaggle.redis_url, "users", "4"], env=env, timeout=60)
    assert applied(signed) == "gaggle 'default': users -> 4 at 20/s"
    wait_until(lambda: users_lately(fresh_target, 300) == {0, 1, 2, 3}, 15, "four users sending")

    # An attacker who can write the stream replays the signed command: refused, not applied twice.
    r = redis_server.client()
    entries = r.xrange(gaggle.key("commands"))
    sent = [fields for _, fields in entries if b'"users"' in fields[b"cmd"] and b'"mac"' in fields[b"cmd"]]
    assert len(sent) == 2  # the wrong secret's, then the right one's
    r.xadd(gaggle.key("commands"), sent[-1])
    r.publish(gaggle.key("control"), "command")
    wait_until(lambda: "replay" in manager.stderr.text().lower(), 10, "the replay refused and logged")

    stopped = run_cli(["control", "--redis-url", gaggle.redis_url, "stop"], env=env, timeout=60)
    assert applied(stopped) == "gaggle 'default': stopping the gaggle"
    finish(manager, workers, timeout=60)
    report = gaggle.report()
    assert [e["command"] for e in report["events"]] == ["users", "stop"]  # each applied once
    assert aggregated(report) == fresh_target.completed_total()
