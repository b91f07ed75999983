"""Bad input, table-driven: every command line below must exit 2 with exactly one line
``Error: InvalidOption { option, value, detail }`` on stderr, nothing on stdout, no
traceback, and start nothing.

Six modes: a standalone run, ``--manager``, ``--worker``, ``demo``, ``demo-site`` and ``status``. Each
case gets its own number ``n``: its load goes to ``{target}/c{n}/...`` and its gaggle is
``c{n}``, so "nothing started" is checked per case (no request under ``/c{n}/`` reached
the CountingTarget, no ``goose:c{n}:*`` key in the real redis-server). The command lines
run as real subprocesses, several at a time, once per module; each case then asserts on
its own result. They run in real processes forked from one that imported the CLI once
(``support.batch``), so a hundred command lines take seconds, not minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import CountingTarget, RedisServer, run_cli, start_redis
from support.batch import BatchResult, run_cli_batch
from test_cli_options import ERROR_LINE, LOAD_TEST

from goose_redis.validate import MAX_USERS


@dataclass(frozen=True)
class Case:
    mode: str  # run, manager, worker, demo, demo-site, status
    extra: tuple[str, ...]
    option: str
    detail: str  # a fragment of the detail
    value: str | None = None  # the whole value, when worth checking


def c(mode: str, extra: list[str], option: str, detail: str, value: str | None = None) -> Case:
    return Case(mode, tuple(extra), option, detail, value)


LOAD_TEST_HEAD = """
from goose_redis import Scenario, Transaction, User


async def front(user: User) -> None:
    await user.get("/any/front")


"""
SCENARIOS = {  # load tests whose own definition is bad input
    "badhost": 'Scenario("B", host="http://127.0.0.1:99999").register(Transaction(front))',
    "spacehost": 'Scenario("B", host="http://127.0.0.1 :8080").register(Transaction(front))',
    "heavy": 'Scenario("B", weight=10**9).register(Transaction(front))',
    "nanwait": 'Scenario("B", wait=(0.0, float("nan"))).register(Transaction(front))',
    "longwait": 'Scenario("B", wait=(0, 10**9)).register(Transaction(front))',
    "intwait": 'Scenario("B", wait=5).register(Transaction(front))',
}
PROC_FILE = "/proc/goose-bad-input.json"  # /proc refuses new files, even to root

CASES: list[Case] = [
    # -- numbers
    c("run", ["-u", "1.5"], "--users", "whole number", "1.5"),
    c("run", ["-u", ""], "--users", "whole number", ""),
    c("run", ["-u", " "], "--users", "whole number"),
    c("run", ["-u", "1e3"], "--users", "whole number"),
    c("run", ["-u", "-3"], "--users", "at least 1"),
    c("run", ["-u", "1\n2"], "--users", "whole number", "1\\n2"),  # shown escaped: still one line
    c("run", ["-u", str(MAX_USERS + 1)], "--users", f"at most {MAX_USERS}"),
    c("run", ["-u", "99999999999999999999999"], "--users", f"at most {MAX_USERS}"),
    c("run", ["-r", "nan"], "--hatch-rate", "greater than 0"),
    c("run", ["-r", "inf"], "--hatch-rate", "greater than 0"),
    c("run", ["-r", "-2"], "--hatch-rate", "greater than 0"),
    c("run", ["-r", "1e-12"], "--hatch-rate", "plain decimals"),
    c("run", ["-r", "5000000"], "--hatch-rate", "at most 1000000"),
    c("run", ["-u", "2", "-r", "0.000000001"], "--hatch-rate", "the ramp-up can be at most 30 days"),
    c("run", ["-u", "1000", "-r", "0.0001"], "--hatch-rate", "the ramp-up can be at most 30 days"),
    c("run", ["--iterations", "0"], "--iterations", "at least 1"),
    c("run", ["--iterations", "1.5"], "--iterations", "whole number"),
    c("run", ["--iterations", "99999999999"], "--iterations", "at most"),
    # -- durations
    c("run", ["-s", "-5s"], "--startup-time", "not a duration"),
    c("run", ["-s", "2d"], "--startup-time", "unknown unit 'd'"),
    c("run", ["-s", "99999h"], "--startup-time", "at most 30 days"),
    c("run", ["-t", "1e30s"], "--run-time", "not a duration"),
    c("run", ["-t", "nan"], "--run-time", "not a duration"),
    c("run", ["-t", "9999999999h"], "--run-time", "at most 30 days"),
    c("run", ["-t", "9" * 400], "--run-time", "at most 30 days"),
    c("run", ["--timeout", "-1"], "--timeout", "not a duration"),
    c("run", ["--timeout", "0"], "--timeout", "longer than 0"),
    c("run", ["--timeout", "745h"], "--timeout", "at most 30 days"),
    c("run", ["--running-metrics", "0"], "--running-metrics", "longer than 0"),
    c("run", ["--running-metrics", "1000000h"], "--running-metrics", "at most 30 days"),
    # -- the target host
    c("run", ["--host", "http://127.0.0.1:99999"], "--host", "1 to 65535"),
    c("run", ["--host", "http://127.0.0.1:0"], "--host", "1 to 65535"),
    c("run", ["--host", "http://127.0.0.1:abc"], "--host", "port 'abc'"),
    c("run", ["--host", "http://127.0.0.1 :8080"], "--host", "space"),
    c("run", ["--host", "http://exa mple.com"], "--host", "space"),
    c("run", ["--host", "http://127.0.0.1:8080/\t"], "--host", "control character"),
    c("run", ["--host", "http://[::1"], "--host", "http:// or https://"),
    c("run", ["--host", "http://::1:8080"], "--host", "[brackets]"),
    c("run", ["--host", "http://127.0.0.1:8080/?x=1"], "--host", "?query"),
    c("run", ["--host", "http://:pw@127.0.0.1:8080"], "--host", "without a user name"),
    c("run", ["--host", "http://1.2.3.4.5"], "--host", "invalid IPv4"),
    c("run", ["--host", ""], "--host", "empty"),
    c("run", ["--host", "http://127.0.0.1:8080\nX-Injected: 1"], "--host", "control character"),
    # -- output files
    c("run", ["--report-file", "{tmp}/missing/r.json"], "--report-file", "does not exist"),
    c("run", ["--report-file", "{tmp}/afile/r.json"], "--report-file", "is not a directory"),
    c("run", ["--report-file", "{tmp}/adir.json"], "--report-file", "names a directory"),
    c("run", ["--report-file", PROC_FILE], "--report-file", "/proc"),
    c("run", ["--report-file", "{tmp}/r.txt"], "--report-file", "unknown report format"),
    c("run", ["--report-file", "{tmp}/twice.json", "--report-file", "{tmp}/twice.json"], "--report-file", "also"),
    c("run", ["--report-file", "{tmp}/same.json", "--request-log", "{tmp}/same.json"], "--request-log", "also"),
    c("run", ["--report-file", "{tmp}/x.csv", "--request-log", "{tmp}/x-errors.csv"], "--request-log", "also"),
    c("run", ["--request-log", "{lt}"], "--request-log", "also the --file"),
    c("run", ["--request-log", "{tmp}"], "--request-log", "names a directory"),
    c("run", ["--request-log", "{tmp}/missing/r.log"], "--request-log", "does not exist"),
    c("run", ["--request-log", PROC_FILE], "--request-log", "/proc"),
    c("run", ["--request-log", ""], "--request-log", "needs a file name"),
    c("run", ["--scenarios", ","], "--scenarios", "names no scenario"),
    # -- the load test's own values: Scenario(host=...), weights, waits
    c("run", ["-f", "{tmp}/badhost.py"], "scenario host", "1 to 65535", "http://127.0.0.1:99999"),
    c("run", ["-f", "{tmp}/spacehost.py"], "scenario host", "space"),
    c("run", ["-f", "{tmp}/heavy.py"], "scenario weight", "at most 100000"),
    c("run", ["-f", "{tmp}/nanwait.py"], "scenario wait", "0 <= min <= max"),
    c("run", ["-f", "{tmp}/longwait.py"], "scenario wait", "30 days"),
    c("run", ["-f", "{tmp}/intwait.py"], "scenario wait", "wait=(min, max)"),
    # -- the Manager: Redis URL, gaggle name, its own options
    c("manager", ["--redis-url", "redis://127.0.0.1:abc"], "--redis-url", "port 'abc'"),
    c("manager", ["--redis-url", "redis://127.0.0.1:99999"], "--redis-url", "1 to 65535"),
    c("manager", ["--redis-url", "redis://127.0.0.1:{port}/abc"], "--redis-url", "whole number, 0 or more"),
    c("manager", ["--redis-url", "redis://127.0.0.1:{port}/-1"], "--redis-url", "whole number, 0 or more"),
    c("manager", ["--redis-url", "redis://127.0.0.1:{port}/0/1"], "--redis-url", "whole number, 0 or more"),
    c("manager", ["--redis-url", "redis://127.0.0.1:{port}/0?socket_timeout=abc"], "--redis-url", "socket_timeout"),
    c("manager", ["--redis-url", "redis://127.0.0.1:{port}/0?nosuch=1"], "--redis-url", "'nosuch' is not supported"),
    c("manager", ["--redis-url", "redis://127.0.0.1:{port}/0?db=1&db=2"], "--redis-url", "'db' twice"),
    c("manager", ["--redis-url", "redis://127.0.0.1:{port}/0?ssl_ca_certs={lt}"], "--redis-url", "only for rediss://"),
    c("manager", ["--redis-url", "rediss://127.0.0.1:{port}/0?ssl_ca_certs=/nonexistent/ca.pem"], "--redis-url",
      "no readable file"),  # fmt: skip
    c("manager", ["--redis-url", "redis://127.0.0.1:{port}/0?client_name=a%20b"], "--redis-url", "client name"),
    c("manager", ["--redis-url", "unix://"], "--redis-url", "socket's path"),
    c("manager", ["--redis-url", "redis://:{port}/0"], "--redis-url", "no host name"),
    c("manager", ["--redis-url", "http://127.0.0.1:{port}"], "--redis-url", "redis://"),
    c("manager", ["--redis-url", ""], "--redis-url", "empty"),
    c("manager", ["--redis-url", "redis://u:hunter2@127.0.0.1:abc/0"], "--redis-url", "port 'abc'",
      "redis://u:***@127.0.0.1:abc/0"),  # fmt: skip
    # A database Redis does not have: found on connecting, before anything is written.
    c("manager", ["--redis-url", "redis://127.0.0.1:{port}/9999"], "--redis-url", "no such database"),
    c("manager", ["--gaggle", "a b"], "--gaggle", "letters, digits"),
    c("manager", ["--gaggle", "a*"], "--gaggle", "letters, digits"),
    c("manager", ["--gaggle", "a:b"], "--gaggle", "letters, digits"),
    c("manager", ["--gaggle", ""], "--gaggle", "letters, digits"),
    c("manager", ["--gaggle", "g" * 65], "--gaggle", "1 to 64"),
    c("manager", ["--expect-workers", "0"], "--expect-workers", "at least 1"),
    c("manager", ["--expect-workers", "abc"], "--expect-workers", "whole number"),
    c("manager", ["--expect-workers", "2"], "--expect-workers", "larger than --users"),
    c("manager", ["--final-wait", "-1"], "--final-wait", "not a duration"),
    c("manager", ["--final-wait", "10000h"], "--final-wait", "at most 30 days"),
    c("manager", ["--redis-timeout", "0"], "--redis-timeout", "longer than 0"),
    c("manager", ["--redis-timeout", "nan"], "--redis-timeout", "not a duration"),
    c("manager", ["--report-file", "{tmp}/missing/m.json"], "--report-file", "does not exist"),
    c("manager", ["-u", "3", "-r", "0.0000001"], "--hatch-rate", "the ramp-up can be at most 30 days"),
    # -- a Worker checks its own options before it registers
    c("worker", ["--request-log", "{tmp}/missing/w.log"], "--request-log", "does not exist"),
    c("worker", ["--request-log", "{tmp}/adir.json"], "--request-log", "names a directory"),
    c("worker", ["--request-log", PROC_FILE], "--request-log", "/proc"),
    c("worker", ["--request-log", "{lt}"], "--request-log", "also the --file"),
    c("worker", ["--request-log", "{tmp}/a\rb.log"], "--request-log", "control character"),
    c("worker", ["--redis-url", "redis://127.0.0.1:99999"], "--redis-url", "1 to 65535"),
    c("worker", ["--redis-url", "redis://127.0.0.1:{port}/0?socket_timeout=0.5"], "--redis-url", "at least 2"),
    c("worker", ["--redis-url", "redis://127.0.0.1:{port}/9999"], "--redis-url", "no such database"),
    c("worker", ["--gaggle", "a*"], "--gaggle", "letters, digits"),
    c("worker", ["--redis-timeout", "1e9"], "--redis-timeout", "not a duration"),
    c("worker", ["--timeout", "-1"], "--timeout", "not a duration"),
    c("worker", ["-u", "3"], "--users", "a Worker takes it from the Manager"),
    # -- demo
    c("demo", ["-u", "0"], "--users", "at least 1"),
    c("demo", ["-u", ""], "--users", "whole number"),
    c("demo", ["-r", "nan"], "--hatch-rate", "greater than 0"),
    c("demo", ["-t", "999999h"], "--run-time", "at most 30 days"),
    c("demo", ["--report-file", "{tmp}/missing/d.json"], "--report-file", "does not exist"),
    c("demo", ["--host", "http://127.0.0.1:99999"], "--host", "1 to 65535"),
    c("demo", ["--timeout", "0"], "--timeout", "longer than 0"),
    # -- demo-site
    c("demo-site", ["--port", "99999"], "--port", "at most 65535"),
    c("demo-site", ["--port", "abc"], "--port", "whole number"),
    c("demo-site", ["--bind", "a b"], "--bind", "space"),
    c("demo-site", ["--bind", "999.1.1.1"], "--bind", "invalid IPv4"),
    # -- status
    c("status", ["--timeout", "-1"], "--timeout", "not a duration"),
    c("status", ["--timeout", "0"], "--timeout", "longer than 0"),
    c("status", ["--timeout", "nan"], "--timeout", "not a duration"),
    c("status", ["--timeout", "99999h"], "--timeout", "at most 30 days"),
    c("status", ["--redis-url", "redis://x:abc"], "--redis-url", "port 'abc'"),
    c("status", ["--redis-url", "redis://127.0.0.1:{port}/abc"], "--redis-url", "whole number, 0 or more"),
    c("status", ["--redis-url", "redis://:s3cret@127.0.0.1:99999/0"], "--redis-url", "1 to 65535",
      "redis://:***@127.0.0.1:99999/0"),  # fmt: skip
    c("status", ["--redis-url", "redis://127.0.0.1:{port}/9999"], "--redis-url", "no such database"),
    c("status", ["--gaggle", "a*"], "--gaggle", "letters, digits"),
    c("status", ["--gaggle", ""], "--gaggle", "letters, digits"),
]


@dataclass
class Env:
    tmp: Path
    load_test: Path
    target: CountingTarget
    redis: RedisServer


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("bad-input")
    load_test = tmp / "loadtest.py"
    load_test.write_text(LOAD_TEST)
    (tmp / "afile").write_text("a file, not a directory\n")
    (tmp / "adir.json").mkdir()
    (tmp / "r.txt").write_text("")
    for name, scenario in SCENARIOS.items():
        (tmp / f"{name}.py").write_text(f"{LOAD_TEST_HEAD}s = {scenario}\n")
    target = CountingTarget().start()
    redis = start_redis()
    try:
        yield Env(tmp, load_test, target, redis)
    finally:
        target.stop()
        redis.cleanup()


def command_line(env: Env, n: int, case: Case) -> list[str]:
    host = f"{env.target.url}/c{n}"
    gaggle = ["--redis-url", env.redis.url, "--gaggle", f"c{n}"]
    base = {
        "run": ["-f", str(env.load_test), "--host", host, "-u", "1", "--iterations", "1"],
        "manager": ["-f", str(env.load_test), "--manager", "--expect-workers", "1", "--host", host, "-u", "1",
                    "-t", "1s", *gaggle],  # fmt: skip
        "worker": ["-f", str(env.load_test), "--worker", *gaggle],
        "demo": ["demo", "--host", host, "-u", "1", "--iterations", "1"],
        "demo-site": ["demo-site"],
        "status": ["status", *gaggle],
    }[case.mode]
    values = {"tmp": str(env.tmp), "lt": str(env.load_test), "port": str(env.redis.port)}
    return [*base, *(arg.format(**values) for arg in case.extra)]


@pytest.fixture(scope="module")
def results(env: Env) -> list[BatchResult]:
    return run_cli_batch([command_line(env, n, case) for n, case in enumerate(CASES)], timeout=30, parallel=3)


def test_the_table_covers_every_mode() -> None:
    assert len(CASES) >= 60
    assert {case.mode for case in CASES} == {"run", "manager", "worker", "demo", "demo-site", "status"}


@pytest.mark.parametrize("n", range(len(CASES)), ids=[f"{k}-{c.mode}-{c.option}" for k, c in enumerate(CASES)])
def test_bad_input_exits_2_with_one_line_and_starts_nothing(
    n: int, env: Env, results: list[BatchResult]
) -> None:
    case, done = CASES[n], results[n]
    assert not done.timed_out, done  # still running at the deadline: it started something
    assert done.returncode == 2, (case, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, (case, done.stderr)
    match = ERROR_LINE.match(lines[0])
    assert match, lines[0]
    assert match["option"] == case.option, lines[0]
    assert case.detail in match["detail"], lines[0]
    if case.value is not None:
        assert match["value"] == case.value, lines[0]
    assert done.stdout == ""
    # Nothing started: no request of this case reached the target, no key of its gaggle in Redis.
    assert not [key for key in env.target.hits() if key.split(" ", 1)[1].startswith(f"/c{n}/")]
    assert env.redis.client().keys(f"goose:c{n}:*") == []


def test_the_batch_runner_sees_exit_codes_output_and_hangs(env: Env) -> None:
    """The harness itself: a run that does not fail must show up as such."""
    hang = ["-f", str(env.load_test), "--worker", "--redis-url", "redis://127.0.0.1:9/0", "--redis-timeout", "1h"]
    version, bad, hung = run_cli_batch([["--version"], ["-u", "0"], hang], timeout=2)
    assert version.returncode == 0 and version.stdout.startswith("goose-redis, version") and not version.timed_out
    assert bad.returncode == 2 and ERROR_LINE.match(bad.stderr.strip())
    assert hung.timed_out and hung.returncode == -9


def test_passwords_never_appear_in_errors(results: list[BatchResult]) -> None:
    for done in results:
        assert "hunter2" not in done.stderr and "s3cret" not in done.stderr


def test_checking_outputs_leaves_nothing_behind(
    env: Env, results: list[BatchResult]
) -> None:
    """Rejected runs create no directory and no report file; the probe file is removed."""
    assert not (env.tmp / "missing").exists()
    assert not Path(PROC_FILE).exists()
    left = sorted(p.name for p in env.tmp.iterdir())
    assert left == sorted(["adir.json", "afile", "loadtest.py", "r.txt", *(f"{n}.py" for n in SCENARIOS)]), left
    assert env.target.total() == 0
    assert env.redis.client().dbsize() == 0


# -- outputs that exist but can not be written ---------------------------------------------------


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory with a file in it, neither writable: by permissions for a normal user, by a
    read-only bind mount for root (root ignores permission bits, not a read-only mount)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "existing.json").write_text('{"kept": true}\n')
    if os.geteuid() != 0:
        (ro / "existing.json").chmod(0o444)
        ro.chmod(0o555)
        try:
            yield ro
        finally:
            ro.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", str(ro), str(ro)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a read-only mount: {mounted.stderr.strip()}")
    try:
        remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True, text=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot make a read-only mount: {remount.stderr.strip()}")
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_unwritable_files_and_directories_are_refused_up_front(
    read_only_dir: Path, env: Env, tmp_path: Path
) -> None:
    lt, host = str(env.load_test), f"{env.target.url}/ro"
    existing, new = str(read_only_dir / "existing.json"), str(read_only_dir / "new.json")
    lines = [
        (["-f", lt, "--host", host, "-u", "1", "--iterations", "1", "--report-file", existing], "--report-file"),
        (["-f", lt, "--host", host, "-u", "1", "--iterations", "1", "--report-file", new], "--report-file"),
        (["-f", lt, "--host", host, "-u", "1", "--iterations", "1", "--request-log", new], "--request-log"),
        (["-f", lt, "--worker", "--redis-url", env.redis.url, "--gaggle", "ro", "--request-log", new], "--request-log"),
    ]
    for args, option in lines:
        done = run_cli(args, timeout=60)
        assert done.returncode == 2, done.stderr
        [line] = done.stderr.splitlines()
        match = ERROR_LINE.match(line)
        assert match and match["option"] == option, line
        assert str(read_only_dir) in match["detail"], line
    assert (read_only_dir / "existing.json").read_text() == '{"kept": true}\n'
    assert not (read_only_dir / "new.json").exists()
    assert env.target.hits("GET /ro/any/front") == 0
    assert env.redis.client().keys("goose:ro:*") == []


def test_check_leaves_existing_outputs_untouched_and_creates_none(env: Env, tmp_path: Path) -> None:
    existing = tmp_path / "existing.json"
    existing.write_text("old report\n")
    os.utime(existing, (1_000_000, 1_000_000))
    new_log = tmp_path / "new.jsonl"
    done = run_cli(["-f", str(env.load_test), "--host", env.target.url, "--report-file", str(existing),
                    "--report-file", str(tmp_path / "new.csv"), "--request-log", str(new_log), "--check"],
                   timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert existing.read_text() == "old report\n" and existing.stat().st_mtime == 1_000_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.json"]


@pytest.mark.parametrize(
    ("variable", "value", "mode", "option"),
    [
        ("GOOSE_HOST", "http://127.0.0.1:99999", "run", "--host"),
        ("GOOSE_USERS", "1.5", "run", "--users"),
        ("GOOSE_REQUEST_LOG", "{tmp}/missing/r.log", "worker", "--request-log"),
        ("GOOSE_REDIS_URL", "redis://127.0.0.1:abc/0", "status", "--redis-url"),
        ("GOOSE_GAGGLE", "a:b", "status", "--gaggle"),
        ("GOOSE_STATUS_TIMEOUT", "-1", "status", "--timeout"),
    ],
)
def test_environment_variables_are_checked_the_same_way(
    env: Env, variable: str, value: str, mode: str, option: str
) -> None:
    lt, tag = str(env.load_test), f"env-{variable.lower()}"
    args = {
        "run": ["-f", lt, "--iterations", "1"],  # --users from the environment, when that is the case
        "worker": ["-f", lt, "--worker", "--redis-url", env.redis.url, "--gaggle", tag],
        "status": ["status"],
    }[mode]
    extra = {"GOOSE_HOST": f"{env.target.url}/{tag}"} if mode == "run" else {}
    [done] = run_cli_batch([args], env={**extra, variable: value.format(tmp=env.tmp)}, timeout=30)
    assert done.returncode == 2 and not done.timed_out, done
    [line] = done.stderr.splitlines()
    match = ERROR_LINE.match(line)
    assert match and match["option"] == option, line
    assert not [key for key in env.target.hits() if f"/{tag}/" in key]
    assert env.redis.client().keys(f"goose:{tag}:*") == []


def test_a_load_test_program_is_not_overwritten_by_its_own_request_log(env: Env, tmp_path: Path) -> None:
    program = tmp_path / "my_test.py"
    program.write_text(LOAD_TEST + "\nif __name__ == '__main__':\n    from goose_redis import main\n\n    main()\n")
    before = program.read_text()
    done = subprocess.run(
        [sys.executable, str(program), "--host", f"{env.target.url}/program", "--iterations", "1",
         "--request-log", str(program)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    match = ERROR_LINE.match(line)
    assert match and match["option"] == "--request-log" and "load-test program" in match["detail"], line
    assert program.read_text() == before
    assert not [key for key in env.target.hits() if "/program/" in key]
