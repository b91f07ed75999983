"""What a newcomer and a Goose user meet first on the command line: ``--help`` that lists the
commands and groups the options, ``demo --help`` and ``python FILE --help`` with only what
applies, ``-l``, one error line for every command-line mistake (exit 2), and Goose's Gaggle
flags answered with their goose-redis form."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from support import REPO_ROOT, CountingTarget, run_cli
from test_cli_options import ERROR_LINE, assert_invalid

from goose_redis import cli
from goose_redis.cli import SUBCOMMANDS

EXAMPLE = REPO_ROOT / "examples" / "drupal_loadtest.py"


def help_of(*args: str) -> str:
    done = run_cli([*args, "--help"], timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def example_help() -> str:
    done = subprocess.run([sys.executable, str(EXAMPLE), "--help"], capture_output=True, text=True, timeout=30,
                          cwd=REPO_ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def option_names(help_text: str) -> set[str]:
    return set(re.findall(r"^\s+(?:-\w, )?(--[\w-]+)", help_text, re.M))


def test_top_level_help_lists_commands_and_option_sections() -> None:
    text = help_of()
    assert text.startswith("Usage: goose-redis [COMMAND] [OPTIONS]\n")
    commands = text.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
    names = [line.split()[0] for line in commands.splitlines() if line.startswith("  ") and line[2] != " "]
    assert names[0] == "run" and set(names[1:]) == set(SUBCOMMANDS)  # every registered command, once
    assert {"demo", "demo-site", "status", "compare"} <= set(names)
    assert "run (default)" in commands
    sections = re.findall(r"^(\w+) options:$", text, re.M)
    assert sections == ["Load", "Shaping", "Gaggle", "Reports", "Verdict", "Logging", "Other"]
    assert "TEXT" not in text and "INTEGER" not in text  # every metavar says what it wants
    for metavar in ("-u, --users N", "-r, --hatch-rate RATE", "-t, --run-time TIME", "-H, --host URL",
                    "--report-file PATH"):  # fmt: skip
        assert metavar in text
    # No developer notes (the module docstring) and no Goose socket flags in the help.
    assert "The command line:" not in text and "exit codes" not in text
    assert "--manager-host" not in text


def test_a_registered_command_is_listed_with_its_first_line(monkeypatch: pytest.MonkeyPatch) -> None:
    @click.command("compare")
    def compare() -> None:
        """Compare two JSON reports. More detail here that stays out of the list."""

    monkeypatch.setitem(cli.SUBCOMMANDS, "compare", compare)
    rows = dict(cli.command_list())
    assert rows["compare"] == "Compare two JSON reports."
    assert list(rows)[0] == "run (default)"


def test_run_is_the_default_command(tmp_path: Path) -> None:
    a = run_cli(["run", "-f", str(EXAMPLE), "-l"], timeout=30)
    b = run_cli(["-f", str(EXAMPLE), "--list"], timeout=30)
    assert a.returncode == b.returncode == 0, (a.stderr, b.stderr)
    assert a.stdout == b.stdout and "AuthBrowsingUser (machine name: authbrowsinguser, weight: 1)" in a.stdout


def test_goose_short_forms() -> None:
    text = help_of()
    for pair in ("-l, --list", "-V, --version", "-R, --request-log", "-T, --transaction-log", "-S, --scenario-log",
                 "-E, --error-log"):  # fmt: skip
        assert pair in text
    done = run_cli(["-V"], timeout=30)
    assert done.returncode == 0 and done.stdout.startswith("goose-redis, version ")


def test_demo_check_validates_without_running() -> None:
    done = run_cli(["demo", "--check", "-u", "3"], timeout=30)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"configuration is valid \(standalone, load test hash [0-9a-f]{16}\)\n", done.stdout)
    assert "demo site serving" not in done.stderr


def test_demo_help_has_no_gaggle_options() -> None:
    text = help_of("demo")
    assert text.startswith("Usage: goose-redis demo [OPTIONS]")
    names = option_names(text)
    assert {"--users", "--run-time", "--report-file", "--error-log"} <= names
    assert not names & {"--manager", "--worker", "--expect-workers", "--redis-url", "--gaggle", "--file", "--list"}
    assert "Gaggle options" not in text and "-u 8 -r 4 -t 15s" in text


def test_load_test_file_help_has_no_file_option_or_commands() -> None:
    text = example_help()
    assert text.startswith("Usage: drupal_loadtest.py [OPTIONS]\n")
    names = option_names(text)
    assert "--file" not in names and "Commands:" not in text and "demo-site" not in text
    assert {"--users", "--manager", "--worker", "--redis-url", "--list"} <= names
    assert "-l, --list" in text


def test_other_commands_name_their_metavars() -> None:
    assert "--port PORT" in help_of("demo-site") and "--bind ADDRESS" in help_of("demo-site")
    status = help_of("status")
    assert "--redis-url URL" in status and "--gaggle NAME" in status


@pytest.mark.parametrize(
    ("args", "option", "value", "detail"),
    [
        (["--frobnicate"], "--frobnicate", "", "No such option."),
        (["--hots", "http://x"], "--hots", "", "Did you mean --host?"),
        (["-f", "x.py", "-u"], "-u", "", "The -u option needs a value."),
        (["frobnicate"], "COMMAND", "frobnicate", "No such command: use one of run, "),
        (["demo-site", "--port", "eighty"], "--port", "eighty", "must be a whole number"),
        (["demo", "--manager"], "--manager", "", "No such option."),
        (["status", "--bogus"], "--bogus", "", "No such option."),
    ],
)
def test_command_line_mistakes_are_one_line(args: list[str], option: str, value: str, detail: str) -> None:
    assert_invalid(args, option, detail, value)


def test_a_bad_value_from_the_environment_names_it() -> None:
    assert_invalid(["demo-site"], "--port", "must be a whole number", "eighty", env={"GOOSE_DEMO_PORT": "eighty"})


def test_load_test_file_mistakes_are_one_line() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE), "--frobnicate"], capture_output=True, text=True,
                          timeout=30, cwd=REPO_ROOT)  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and ERROR_LINE.match(lines[0]), done.stderr


@pytest.mark.parametrize(
    ("args", "option", "value", "detail"),
    [
        (["--worker", "--manager-host", "10.10.3.21"], "--manager-host", "10.10.3.21",
         "goose-redis Workers meet the Manager in Redis, not over a socket: use --redis-url redis://10.10.3.21:6379/0"),
        (["--worker", "--manager-host", "10.10.3.21", "--manager-port", "5115"], "--manager-host", "10.10.3.21",
         "not --manager-port 5115"),
        (["--worker", "--manager-port", "5115"], "--manager-port", "5115", "--redis-url redis://REDIS-HOST:6379/0"),
        (["--manager", "--expect-workers", "1", "--manager-bind-host", "0.0.0.0"], "--manager-bind-host", "0.0.0.0",
         "listens on no socket"),
        (["--manager", "--expect-workers", "1", "--manager-bind-port", "5115"], "--manager-bind-port", "5115",
         "the same --redis-url"),
    ],
)  # fmt: skip
def test_goose_gaggle_flags_get_their_redis_form(
    args: list[str], option: str, value: str, detail: str, fresh_target: CountingTarget
) -> None:
    # The answer comes before anything else is looked at: no Redis is contacted, no file is loaded.
    assert_invalid(["-f", str(EXAMPLE), "--host", fresh_target.url, *args], option, detail, value)
    assert_invalid(["-f", "/no/such/file.py", *args], option, detail, value)
    assert fresh_target.total() == 0
