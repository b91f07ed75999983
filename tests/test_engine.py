"""The standalone engine against a real HTTP server on loopback.

Most runs are in-process (``run_standalone`` with a ``Config`` from ``build_config``, as
the CLI builds them); behaviour that belongs to the command line (signals, the console
script, the example as its own program, ``--timeout``) runs ``python -m goose_redis`` in
a subprocess. Every report written is validated against ``goose_redis/report/schema.json``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from support import REPO_ROOT, CountingTarget, ProcessTracker, free_port, run_cli

from goose_redis import Scenario, Transaction, User
from goose_redis.config import build_config
from goose_redis.report.data import PERCENTILES
from goose_redis.scenario import LoadTest
from goose_redis.standalone import run_standalone

SCHEMA = json.loads((REPO_ROOT / "goose_redis" / "report" / "schema.json").read_text())
GOOSE_REDIS_SCRIPT = Path(sys.executable).with_name("goose-redis")

_runs = itertools.count()


def validate_report(report: dict[str, Any]) -> None:
    jsonschema.validate(report, SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def run_engine(scenarios: Sequence[Scenario], tmp_path: Path, **options: Any) -> dict[str, Any]:
    """One standalone run in this process; returns its JSON report (schema-checked).

    ``options`` are raw option values as the CLI passes them (strings), e.g. ``users="3"``.
    """
    n = next(_runs)
    report_path = tmp_path / f"report-{n}.json"
    raw: dict[str, Any] = {"hatch_rate": "100", "quiet": True, "report_file": (str(report_path),)}
    raw.update(options)
    load_test = LoadTest(scenarios)
    config = build_config(raw, load_test.hosts())
    assert asyncio.run(asyncio.wait_for(run_standalone(config, load_test), 60)) == 0
    report: dict[str, Any] = json.loads(report_path.read_text())
    validate_report(report)
    return report


def rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Request rows keyed "METHOD name", as the target keys its hits."""
    return {f"{r['method']} {r['name']}": r for r in report["requests"]}


def tx_rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in report["transactions"]}


def read_request_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def write_load_test(tmp_path: Path, body: str, name: str = "loadtest.py") -> Path:
    path = tmp_path / name
    path.write_text("from goose_redis import Scenario, Transaction, User\n\n" + textwrap.dedent(body))
    return path


# ---------------------------------------------------------------------------- counts


def test_counts_per_request_equal_what_the_server_saw(fresh_target: CountingTarget, tmp_path: Path) -> None:
    async def browse(user: User) -> None:
        await user.get("/")
        await user.get(f"/any/item/{random.randint(1, 1000)}", name="/any/item/{id}")
        await user.head("/")

    async def write(user: User) -> None:
        await user.post_json("/echo", {"user": user.index})
        await user.post_form("/any/form", {"a": "1"})
        await user.put("/any/put", data=b"x")
        await user.patch("/any/patch", data=b"y")
        await user.delete("/any/gone")
        await user.get("/json", params={"q": "1"})

    s = Scenario("Counts").register(Transaction(browse, weight=2), Transaction(write))
    report = run_engine([s], tmp_path, host=fresh_target.url, users="4", iterations="5", no_reset_metrics=True)

    hits = fresh_target.hits()
    item_hits = sum(n for key, n in hits.items() if key.startswith("GET /any/item/"))
    expected = {k: v for k, v in hits.items() if not k.startswith("GET /any/item/")}
    expected["GET /any/item/{id}"] = item_hits
    got = {key: row["count"] for key, row in rows(report).items()}
    assert got == expected
    # 4 users x 5 iterations x (2 x browse + write)
    assert item_hits == 4 * 5 * 2 and hits["POST /echo"] == 4 * 5
    assert report["aggregated"]["count"] == fresh_target.total() == 4 * 5 * (2 * 3 + 6)
    assert report["aggregated"]["fail_count"] == 0
    assert rows(report)["POST /echo"]["status_codes"] == {"200": 20}


def test_request_rows_count_response_body_bytes(fresh_target: CountingTarget, tmp_path: Path) -> None:
    async def browse(user: User) -> None:
        await user.get("/")
        await user.get("/json")
        await user.head("/")  # a HEAD response has no body

    sizes = {path: len(urllib.request.urlopen(fresh_target.url + path, timeout=10).read()) for path in ("/", "/json")}
    assert sizes["/"] > 0 and sizes["/json"] > sizes["/"]
    report = run_engine([Scenario("Bytes").register(Transaction(browse))], tmp_path, host=fresh_target.url,
                        users="2", iterations="3", no_reset_metrics=True)  # fmt: skip
    r = rows(report)
    assert (r["GET /"]["bytes"], r["GET /"]["mean_bytes"]) == (6 * sizes["/"], float(sizes["/"]))
    assert r["GET /json"]["bytes"] == 6 * sizes["/json"]
    assert (r["HEAD /"]["bytes"], r["HEAD /"]["mean_bytes"]) == (0, 0.0)
    agg = report["aggregated"]
    assert agg["bytes"] == 6 * (sizes["/"] + sizes["/json"])
    assert agg["mean_bytes"] == pytest.approx(agg["bytes"] / 18)


def test_run_time_counts_and_weighted_mix(fresh_target: CountingTarget, tmp_path: Path) -> None:
    async def a(user: User) -> None:
        await user.get("/any/a")

    async def b(user: User) -> None:
        await user.get("/any/b")

    async def c(user: User) -> None:
        await user.get("/any/c")

    heavy = Scenario("Heavy", weight=3).register(Transaction(a, weight=3), Transaction(b))
    light = Scenario("Light", weight=1).register(Transaction(c))
    report = run_engine([heavy, light], tmp_path, host=fresh_target.url, users="8", run_time="1", no_reset_metrics=True)

    # Stopped by run time, requests in flight were drained: the rows equal the server's counts.
    assert {k: r["count"] for k, r in rows(report).items()} == fresh_target.hits()
    users = {s["name"]: s["users"] for s in report["scenarios"]}
    assert users == {"Heavy": 6, "Light": 2}
    ha, hb = fresh_target.hits("GET /any/a"), fresh_target.hits("GET /any/b")
    assert hb > 20, fresh_target.hits()
    # Each Heavy user ran whole passes of [a, b, a, a] and then a prefix of one, so
    # a - 3b is between -2 and +1 per user: the mix is 3:1 up to that.
    assert -2 * 6 <= ha - 3 * hb <= 1 * 6, (ha, hb)
    assert fresh_target.hits("GET /any/c") > 50
    assert report["run_time_s"] == 1.0 and report["iterations"] is None


def test_iterations_stop_exactly(fresh_target: CountingTarget, tmp_path: Path) -> None:
    async def two(user: User) -> None:
        await user.get("/any/one")
        await user.get("/any/two")

    async def three(user: User) -> None:
        await user.get("/any/three")

    s = Scenario("Iter").register(Transaction(two, name="two"), Transaction(three, name="three"))
    started = time.monotonic()
    report = run_engine([s], tmp_path, host=fresh_target.url, users="3", iterations="4", no_reset_metrics=True)
    assert time.monotonic() - started < 10  # it ended by itself
    users, iterations, per_iteration = 3, 4, 3
    assert fresh_target.total() == users * iterations * per_iteration
    assert report["aggregated"]["count"] == users * iterations * per_iteration
    assert report["scenarios"][0]["count"] == users * iterations
    assert {name: r["count"] for name, r in tx_rows(report).items()} == {"two": 12, "three": 12}
    assert report["iterations"] == 4 and report["run_time_s"] is None


def test_metrics_reset_drops_the_ramp_up_rows(fresh_target: CountingTarget, tmp_path: Path) -> None:
    async def one(user: User) -> None:
        await user.get("/any/one")

    s = Scenario("Reset").register(Transaction(one))
    # 3 users 0.2 s apart: the first runs during the ramp-up, whose rows the reset drops.
    report = run_engine([s], tmp_path, host=fresh_target.url, users="3", hatch_rate="5", iterations="200")
    assert report["metrics_reset"] is True
    assert 0 < report["aggregated"]["count"] < fresh_target.total() == 600
    assert [p["name"] for p in report["phases"]][:2] == ["ramp-up", "steady"]


# ---------------------------------------------------------------------------- order


def test_sequences_and_on_start_on_stop_order(fresh_target: CountingTarget, tmp_path: Path) -> None:
    seen: dict[int, list[str]] = defaultdict(list)

    def step(label: str) -> Transaction:
        async def run(user: User) -> None:
            seen[user.index].append(label)
            await user.get(f"/any/{label}")

        return Transaction(run, name=label)

    def with_(t: Transaction, **kw: Any) -> Transaction:
        for k, v in kw.items():
            setattr(t, k, v)
        return t

    s = Scenario("Order").register(
        step("u1"),
        with_(step("s2a"), sequence=2, weight=2),
        with_(step("stop"), on_stop=True),
        with_(step("s1"), sequence=1),
        step("u2"),
        with_(step("start"), on_start=True),
        with_(step("s2b"), sequence=2),
    )
    run_engine([s], tmp_path, host=fresh_target.url, users="2", iterations="2", no_reset_metrics=True)
    one_pass = ["s1", "s2a", "s2b", "s2a", "u1", "u2"]
    assert dict(seen) == {0: ["start", *one_pass, *one_pass, "stop"], 1: ["start", *one_pass, *one_pass, "stop"]}
    assert fresh_target.hits("GET /any/start") == 2 and fresh_target.hits("GET /any/stop") == 2
    assert fresh_target.hits("GET /any/s2a") == 2 * 2 * 2


def test_on_stop_runs_when_run_time_ends(fresh_target: CountingTarget, tmp_path: Path) -> None:
    async def login(user: User) -> None:
        await user.get("/any/login")
        user.session_data["token"] = f"t{user.index}"

    async def work(user: User) -> None:
        await user.get("/any/work", params={"token": user.session_data["token"]})

    async def logout(user: User) -> None:
        await user.get("/any/logout", params={"token": user.session_data["token"]})

    s = Scenario("Session", wait=(0.01, 0.02)).register(
        Transaction(login, on_start=True), Transaction(work), Transaction(logout, on_stop=True)
    )
    report = run_engine([s], tmp_path, host=fresh_target.url, users="3", run_time="0.5", no_reset_metrics=True)
    assert fresh_target.hits("GET /any/login") == 3 and fresh_target.hits("GET /any/logout") == 3
    assert fresh_target.hits("GET /any/work") > 3
    assert rows(report)["GET /any/logout"]["count"] == 3
    tokens = {r.query_string for r in fresh_target.recent() if r.path == "/any/logout"}
    assert tokens == {"token=t0", "token=t1", "token=t2"}  # session data is per user


# ---------------------------------------------------------------------------- hatch rate


@pytest.mark.parametrize(("pace", "interval"), [({"hatch_rate": "5"}, 0.2), ({"startup_time": "0.6"}, 0.12)])
def test_users_launch_at_the_asked_pace(
    fresh_target: CountingTarget, tmp_path: Path, pace: dict[str, str], interval: float
) -> None:
    async def ping(user: User) -> None:
        await user.get("/")

    log = tmp_path / "requests.jsonl"
    opts: dict[str, Any] = {"users": "5", "iterations": "1", "request_log": str(log), "no_reset_metrics": True}
    opts.update(pace)
    if "startup_time" in pace:
        opts["hatch_rate"] = None
    run_engine([Scenario("Pace").register(Transaction(ping))], tmp_path, host=fresh_target.url, **opts)
    first: dict[int, float] = {}
    for entry in read_request_log(log):
        first[entry["user"]] = min(first.get(entry["user"], 1e9), entry["elapsed"])
    assert sorted(first) == [0, 1, 2, 3, 4]
    for user, at in first.items():
        # never early; late by at most a generous scheduling delay
        assert user * interval - 0.02 <= at <= user * interval + 0.5, (user, at, first)
    assert first[4] - first[0] >= 4 * interval * 0.8


# ---------------------------------------------------------------------------- validation


def test_validation_marks_failures(fresh_target: CountingTarget, tmp_path: Path) -> None:
    async def checks(user: User) -> None:
        await user.get("/status/404", name="expected 404", expect_status=404)
        await user.get("/status/200", name="wanted 201", expect_status=201)
        page = await user.get("/", name="front")
        if "Welcome" not in page.text:
            page.fail("front page without welcome text")
        gone = await user.get("/status/410", name="gone is fine")
        gone.succeed()
        await user.get("/status/503", name="unavailable")
        data = (await user.get("/json", name="json")).json()
        assert data["name"] == "goose"

    async def broken(user: User) -> None:
        await user.get("/any/before-raise")
        raise RuntimeError("transaction bug")

    s = Scenario("Checks").register(Transaction(checks, name="checks"), Transaction(broken, name="broken"))
    report = run_engine([s], tmp_path, host=fresh_target.url, users="2", iterations="3", no_reset_metrics=True)
    r = rows(report)
    assert (r["GET expected 404"]["fail_count"], r["GET expected 404"]["status_codes"]) == (0, {"404": 6})
    assert r["GET wanted 201"]["fail_count"] == 6
    assert r["GET wanted 201"]["errors"] == {"expected status 201, got 200 OK": 6}
    assert r["GET front"]["errors"] == {"front page without welcome text": 6}
    assert r["GET gone is fine"]["fail_count"] == 0
    assert r["GET unavailable"]["errors"] == {"503 Service Unavailable": 6}
    assert r["GET json"]["fail_count"] == 0
    assert report["aggregated"]["fail_count"] == 18
    t = tx_rows(report)
    assert (t["checks"]["count"], t["checks"]["fail_count"]) == (6, 6)  # a failed request fails its transaction
    assert (t["broken"]["count"], t["broken"]["fail_count"]) == (6, 6)
    assert t["broken"]["errors"] == {"RuntimeError: transaction bug": 6}
    # a raising transaction does not stop its user: every iteration ran
    assert fresh_target.hits("GET /any/before-raise") == 6
    assert report["scenarios"][0]["count"] == 6 and report["scenarios"][0]["fail_count"] == 6
    errors = {(e["name"], e["error"]): e["count"] for e in report["errors"]}
    assert errors[("unavailable", "503 Service Unavailable")] == 6


def test_cookies_persist_per_user(fresh_target: CountingTarget, tmp_path: Path) -> None:
    async def log_in(user: User) -> None:
        await user.get("/cookie/set", params={"value": f"user{user.index}"}, name="set cookie")

    async def check(user: User) -> None:
        await user.get("/cookie/check", name="check (logged in)")

    async def check_anon(user: User) -> None:
        await user.get("/cookie/check", name="check (anonymous)")

    member = Scenario("Member").register(Transaction(log_in, on_start=True), Transaction(check))
    anon = Scenario("Anonymous").register(Transaction(check_anon))
    report = run_engine(
        [member, anon], tmp_path, host=fresh_target.url, users="4", iterations="3", no_reset_metrics=True
    )
    r = rows(report)
    assert (r["GET check (logged in)"]["count"], r["GET check (logged in)"]["fail_count"]) == (6, 0)
    # the other users' cookie jars are their own: no cookie leaks to them
    assert (r["GET check (anonymous)"]["count"], r["GET check (anonymous)"]["fail_count"]) == (6, 6)
    assert r["GET check (anonymous)"]["errors"] == {"401 Unauthorized": 6}
    cookies = {r.headers.get("Cookie") for r in fresh_target.recent() if r.path == "/cookie/check"}
    assert cookies == {None, "goose_test=user0", "goose_test=user2"}


# ---------------------------------------------------------------------------- percentiles


def test_sketch_percentiles_within_two_percent_of_exact(fresh_target: CountingTarget, tmp_path: Path) -> None:
    rng = random.Random(11)

    async def varied(user: User) -> None:
        await user.get(f"/slow?ms={rng.choice([0, 1, 2, 3, 5, 8, 13, 21])}", name="varied")

    log = tmp_path / "requests.jsonl"
    report = run_engine(
        [Scenario("Latency").register(Transaction(varied))],
        tmp_path,
        host=fresh_target.url,
        users="30",
        hatch_rate="1000",
        iterations="60",
        request_log=str(log),
        no_reset_metrics=True,
    )
    times = sorted(e["response_time_ms"] for e in read_request_log(log))
    assert len(times) == 30 * 60 == report["aggregated"]["count"]
    for row in (rows(report)["GET varied"], report["aggregated"]):
        assert row["min_ms"] == pytest.approx(times[0]) and row["max_ms"] == pytest.approx(times[-1])
        assert row["mean_ms"] == pytest.approx(sum(times) / len(times))
        for label, q in PERCENTILES:
            exact = times[int(q * (len(times) - 1))]
            assert row["percentiles_ms"][label] == pytest.approx(exact, rel=0.02), (label, exact)
        assert row["median_ms"] == row["percentiles_ms"]["50"]
    assert times[-1] > 5 * times[0]  # the latencies really were spread


# ---------------------------------------------------------------------------- command line


SLOW_AND_DEAD = """
async def slow(user: User) -> None:
    await user.get("/slow?ms=1000", name="slow")

async def dead(user: User) -> None:
    await user.get("/", name="dead")

slow_scenario = Scenario("Slow", host="{target}").register(Transaction(slow))
dead_scenario = Scenario("Dead", host="http://127.0.0.1:{dead_port}").register(Transaction(dead))
"""


def test_dead_port_and_timeout_give_readable_errors(fresh_target: CountingTarget, tmp_path: Path) -> None:
    dead_port = free_port()
    lt = write_load_test(tmp_path, SLOW_AND_DEAD.format(target=fresh_target.url, dead_port=dead_port))
    out = tmp_path / "report.json"
    done = run_cli(
        ["-f", str(lt), "-u", "2", "-r", "100", "--iterations", "2", "--timeout", "0.3s", "--report-file", str(out)],
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    validate_report(report)
    r = rows(report)
    assert (r["GET slow"]["count"], r["GET slow"]["fail_count"]) == (2, 2)
    assert r["GET slow"]["errors"] == {"timeout after 0.3s": 2}
    assert r["GET slow"]["max_ms"] < 1000
    assert (r["GET dead"]["count"], r["GET dead"]["fail_count"]) == (2, 2)
    dead_error = f"connection failed: 127.0.0.1:{dead_port}: Connection refused"
    assert r["GET dead"]["errors"] == {dead_error: 2}
    assert r["GET dead"]["status_codes"] == {}  # no HTTP response came
    errors = {e["error"]: e["count"] for e in report["errors"]}
    assert errors == {"timeout after 0.3s": 2, dead_error: 2}
    assert "Traceback" not in done.stderr
    assert "timeout after 0.3s" in done.stdout  # the errors table
    fresh_target.wait_for_completed(2, "GET /slow", timeout=5)  # the server's side ends too


PACED = """
async def ping(user: User) -> None:
    await user.get("/any/ping")

paced = Scenario("Paced", wait=(0.01, 0.02)).register(Transaction(ping))
"""


def test_sigint_prints_tables_and_writes_the_report(
    fresh_target: CountingTarget, procs: ProcessTracker, tmp_path: Path
) -> None:
    lt = write_load_test(tmp_path, PACED)
    out = tmp_path / "report.json"
    p = procs.start(["-f", str(lt), "--host", fresh_target.url, "-u", "2", "-r", "20", "-t", "60s",
                     "--report-file", str(out)])  # fmt: skip
    fresh_target.wait_for_hits(40, timeout=20)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=20) == 0, p.output()
    stdout, stderr = p.stdout.text(), p.stderr.text()
    for title in ("PER SCENARIO METRICS", "PER TRANSACTION METRICS", "PER REQUEST METRICS"):
        assert title in stdout
    assert "SIGINT received" in stderr and "Traceback" not in stderr
    report = json.loads(out.read_text())
    validate_report(report)
    assert 0 < report["aggregated"]["count"] <= fresh_target.total()
    assert report["aggregated"]["fail_count"] == 0
    assert report["phases"][-1]["name"] == "stop"
    assert report["duration_s"] < 30


SLOW_ONLY = """
async def stuck(user: User) -> None:
    await user.get("/slow?ms=30000")

stuck_scenario = Scenario("Stuck").register(Transaction(stuck))
"""


def test_second_sigint_exits_at_once(procs: ProcessTracker, tmp_path: Path) -> None:
    # handler_cancellation: the requests the killed process leaves behind end on the server too
    with CountingTarget(handler_cancellation=True) as stuck_target:
        _second_sigint(stuck_target, procs, tmp_path)


def _second_sigint(stuck_target: CountingTarget, procs: ProcessTracker, tmp_path: Path) -> None:
    lt = write_load_test(tmp_path, SLOW_ONLY)
    out = tmp_path / "report.json"
    p = procs.start(["-f", str(lt), "--host", stuck_target.url, "-u", "2", "-r", "50", "-t", "60s",
                     "--report-file", str(out)])  # fmt: skip
    stuck_target.wait_for_hits(2, timeout=20)
    p.send_signal(signal.SIGINT)
    p.stderr.wait_for("stopping gracefully", timeout=10)
    # users are still waiting on their 30 s requests (the graceful stop gives them 5 s)
    sent = time.monotonic()
    p.send_signal(signal.SIGINT)
    code = p.wait(timeout=10)
    assert time.monotonic() - sent < 3.0
    assert code == 130, p.output()
    assert "again: exiting now" in p.stderr.text()
    assert not out.exists()


# ---------------------------------------------------------------------------- examples and demo


def test_example_file_is_its_own_program() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "drupal_loadtest.py"), "--list"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "AnonBrowsingUser (machine name: anonbrowsinguser, weight: 4)" in done.stdout
    assert "AuthBrowsingUser (machine name: authbrowsinguser, weight: 1)" in done.stdout
    assert "(Auth) login (weight: 1, on_start)" in done.stdout
    assert "(Anon) front page (weight: 15)" in done.stdout


@pytest.mark.slow
def test_demo_runs_against_the_embedded_site(tmp_path: Path) -> None:
    script = [str(GOOSE_REDIS_SCRIPT)] if GOOSE_REDIS_SCRIPT.exists() else [sys.executable, "-m", "goose_redis"]
    out = tmp_path / "demo.json"
    done = subprocess.run(
        [*script, "demo", "-t", "3s", "-u", "2", "--report-file", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "demo site serving at http://127.0.0.1:" in done.stderr
    for title in ("PER SCENARIO METRICS", "PER TRANSACTION METRICS", "PER REQUEST METRICS"):
        assert title in done.stdout
    report = json.loads(out.read_text())
    validate_report(report)
    assert report["aggregated"]["count"] > 0
    assert report["aggregated"]["fail_count"] == 0, report["errors"]
    assert {s["name"] for s in report["scenarios"]} == {"AnonBrowsingUser", "AuthBrowsingUser"}
    assert any(r["name"].endswith("static asset") for r in report["requests"])
