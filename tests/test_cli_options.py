"""The command line: every invalid option fails before anything starts (exit 2, one
line naming option, value and reason, no traceback); ``--list``, ``--check``,
``--version``; and ``GOOSE_*`` environment variables standing in for options."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support import CountingTarget, run_cli

from goose_redis import __version__

LOAD_TEST = """
from goose_redis import Scenario, Transaction, User


async def front(user: User) -> None:
    await user.get("/any/front")


async def login(user: User) -> None:
    await user.get("/any/login")


browse = Scenario("Browse Site", weight=2).register(Transaction(front, name="front page", weight=3))
member = Scenario("Member").register(
    Transaction(login, name="login", on_start=True), Transaction(front, name="member front", sequence=1)
)
"""

ZERO_WEIGHT = """
from goose_redis import Scenario, Transaction, User


async def front(user: User) -> None:
    await user.get("/")


heavy = Scenario("Heavy Readers", weight=0).register(Transaction(front))
"""

NO_TRANSACTIONS = """
from goose_redis import Scenario

empty = Scenario("Empty Cart")
"""

BROKEN_IMPORT = """
import no_such_module_for_goose_tests
"""

ERROR_LINE = re.compile(
    r'^Error: InvalidOption \{ option: "(?P<option>[^"]+)", value: "(?P<value>.*)", detail: "(?P<detail>.+)" \}$'
)


@pytest.fixture
def load_test(tmp_path: Path) -> Path:
    path = tmp_path / "loadtest.py"
    path.write_text(LOAD_TEST)
    return path


def _file(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


def assert_invalid(args: list[str], option: str, detail: str, value: str | None = None,
                   env: dict[str, str] | None = None) -> None:  # fmt: skip
    done = run_cli(args, env=env, timeout=30)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # one line, no traceback
    match = ERROR_LINE.match(lines[0])
    assert match, lines[0]
    assert match["option"] == option
    assert detail in match["detail"], lines[0]
    if value is not None:
        assert match["value"] == value
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("extra", "option", "value", "detail"),
    [
        ([], "--host", "", "A host must be defined"),
        (["--host", "127.0.0.1:8080"], "--host", "127.0.0.1:8080", "http:// or https://"),
        (["-u", "0"], "--users", "0", "at least 1"),
        (["--users", "many"], "--users", "many", "whole number"),
        (["-r", "0"], "--hatch-rate", "0", "greater than 0"),
        (["-t", "10s", "--iterations", "2"], "--run-time", "10s", "can not be set together with --iterations"),
        (["-t", "10x"], "--run-time", "10x", "not a duration"),
        (["-t", "1m1m"], "--run-time", "1m1m", "not a duration"),
        (["--timeout", "later"], "--timeout", "later", "not a duration"),
        (["--iterations", "0"], "--iterations", "0", "at least 1"),
        (["--scenarios", "nosuch"], "--scenarios", "nosuch", "no scenario matches 'nosuch'"),
        (["--scenarios", "browse*,checkout"], "--scenarios", "browse*,checkout", "'checkout'"),
        (["--report-file", "out.txt"], "--report-file", "out.txt", "unknown report format"),
        (["-r", "2", "-s", "10s"], "--startup-time", "10s", "can not be set together with --hatch-rate"),
        (["--expect-workers", "2"], "--expect-workers", "2", "only for the --manager"),
        (["--manager", "--worker"], "--worker", "true", "--manager"),
        (["--redis-url", "http://redis:6379"], "--redis-url", "http://redis:6379", "redis://"),
    ],
)
def test_invalid_options_exit_2_with_one_line(
    load_test: Path, fresh_target: CountingTarget, extra: list[str], option: str, value: str, detail: str
) -> None:
    host = [] if option == "--host" else ["--host", fresh_target.url]
    # "-u 1" first: a later "-u 0" wins, as on any click command line
    assert_invalid(["-f", str(load_test), *host, "-u", "1", *extra], option, detail, value)
    assert fresh_target.total() == 0  # nothing started


@pytest.mark.parametrize(
    ("body", "option", "detail"),
    [
        (ZERO_WEIGHT, "scenario weight", "'Heavy Readers' must have a weight of at least 1"),
        (NO_TRANSACTIONS, "scenario", "'Empty Cart' has no transactions"),
        (BROKEN_IMPORT, "--file", "ModuleNotFoundError"),
    ],
)
def test_invalid_load_tests_name_the_problem(tmp_path: Path, body: str, option: str, detail: str) -> None:
    lt = _file(tmp_path, "lt.py", body)
    assert_invalid(["-f", lt, "--host", "http://127.0.0.1:9"], option, detail)


def test_missing_file_and_no_file(tmp_path: Path) -> None:
    assert_invalid(["-f", str(tmp_path / "nope.py"), "--host", "http://127.0.0.1:9"], "--file", "does not exist")
    assert_invalid(["--host", "http://127.0.0.1:9"], "--file", "load-test file is required")


def test_invalid_values_from_the_environment(load_test: Path, fresh_target: CountingTarget) -> None:
    assert_invalid(
        ["-f", str(load_test)], "--users", "at least 1", "0", env={"GOOSE_USERS": "0", "GOOSE_HOST": fresh_target.url}
    )
    assert_invalid(["-f", str(load_test), "--host", fresh_target.url], "--run-time", "not a duration", "soon",
                   env={"GOOSE_RUN_TIME": "soon"})  # fmt: skip
    assert fresh_target.total() == 0


def test_list_prints_scenarios_without_a_host(load_test: Path) -> None:
    done = run_cli(["-f", str(load_test), "--list"], timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "Browse Site (machine name: browsesite, weight: 2)",
        "  - front page (weight: 3)",
        "Member (machine name: member, weight: 1)",
        "  - login (weight: 1, on_start)",
        "  - member front (weight: 1, sequence: 1)",
    ]
    filtered = run_cli(["-f", str(load_test), "--list", "--scenarios", "mem*"], timeout=30)
    assert filtered.returncode == 0 and "Browse Site" not in filtered.stdout and "Member" in filtered.stdout


def test_check_validates_and_starts_nothing(load_test: Path, fresh_target: CountingTarget) -> None:
    done = run_cli(["-f", str(load_test), "--host", fresh_target.url, "-u", "4", "-t", "1h30m", "--check"], timeout=30)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"configuration is valid \(standalone, load test hash [0-9a-f]{16}\)\n", done.stdout)
    assert fresh_target.total() == 0


def test_version() -> None:
    done = run_cli(["--version"], timeout=30)
    assert done.returncode == 0
    assert done.stdout.strip() == f"goose-redis, version {__version__}"


def test_environment_variables_stand_in_for_options(
    load_test: Path, fresh_target: CountingTarget, tmp_path: Path
) -> None:
    report, log = tmp_path / "env.json", tmp_path / "requests.jsonl"
    env = {
        "GOOSE_FILE": str(load_test),
        "GOOSE_HOST": fresh_target.url,
        "GOOSE_USERS": "9",  # the command line wins over the environment
        "GOOSE_HATCH_RATE": "50",
        "GOOSE_ITERATIONS": "2",
        "GOOSE_SCENARIOS": "browse*",
        "GOOSE_REPORT_FILE": str(report),
        "GOOSE_REQUEST_LOG": str(log),
        "GOOSE_NO_RESET_METRICS": "1",
        "GOOSE_QUIET": "1",
    }
    done = run_cli(["-u", "3"], env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    data = json.loads(report.read_text())
    assert (data["users"], data["hatch_rate"], data["iterations"], data["host"]) == (3, 50.0, 2, fresh_target.url)
    assert data["metrics_reset"] is False
    assert [s["name"] for s in data["scenarios"]] == ["Browse Site"]
    # 3 users x 2 iterations x 1 front page (a lone weight reduces to 1); Member was filtered out
    assert fresh_target.hits() == {"GET /any/front": 6}
    assert data["aggregated"]["count"] == 6
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(entries) == 6
    first = entries[0]
    assert set(first) >= {
        "elapsed", "method", "name", "url", "status", "response_time_ms", "success", "error",
        "user", "scenario", "transaction",
    }  # fmt: skip
    assert (first["method"], first["name"], first["status"], first["success"], first["error"]) == (
        "GET", "/any/front", 200, True, None,
    )  # fmt: skip
    assert first["url"] == f"{fresh_target.url}/any/front"
    assert (first["scenario"], first["transaction"]) == ("Browse Site", "front page")
    assert {e["user"] for e in entries} == {0, 1, 2}
    assert all(e["response_time_ms"] > 0 and e["elapsed"] >= 0 for e in entries)
