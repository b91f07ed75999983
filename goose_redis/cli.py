"""The command line: parse, validate, run. The only place errors become exit codes.

``goose-redis`` runs a load test unless its first word names a command in ``SUBCOMMANDS``;
registering a command there is all it takes to list it in ``goose-redis --help``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from . import __version__, loop
from .clierrors import goose_socket_flags, usage_error
from .config import Config, build_config, build_remote_config, build_status_config
from .errors import InvalidOption, LoadTestError
from .loader import load_file, scenarios_of
from .logs import setup_logging
from .options import GroupedCommand, click_options
from .scenario import LoadTest, Scenario, filter_scenarios

log = logging.getLogger("goose_redis")

# Shipped inside the package so ``goose-redis demo`` works from any install;
# examples/drupal_loadtest.py in the repository is the same file, for users to read and copy.
EXAMPLE_FILE = Path(__file__).resolve().parent / "examples" / "drupal_loadtest.py"
HELP = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
ENV_EPILOG = "Every option also reads GOOSE_<OPTION> from the environment (GOOSE_USERS, GOOSE_RUN_TIME, ...)."


def _fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"Error: {message}\n")
    sys.exit(code)


def run_options(where: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The load-test options (``options.OPTIONS``) that apply ``where``, plus ``--version``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = click.version_option(__version__, "-V", "--version", prog_name="goose-redis")(fn)
        return click_options(where)(fn)

    return decorate


def prepare(raw: dict[str, Any], scenarios: Sequence[Scenario] | None) -> tuple[Config, LoadTest]:
    """Load, filter and validate: every user error raises InvalidOption here, before anything starts."""
    goose_socket_flags(raw)
    if scenarios is None:
        if not raw.get("file"):
            raise InvalidOption("--file", "", "A load-test file is required: goose-redis -f FILE.")
        scenarios = load_file(raw["file"])
    chosen = filter_scenarios(scenarios, raw.get("scenarios"))
    load_test = LoadTest(chosen, scenarios)
    names = ([t.display_name for s in chosen for t in s.transactions], [s.name for s in chosen])
    config = build_config(raw, load_test.hosts(), row_names=names)
    loop.choose()  # a bad GOOSE_EVENT_LOOP stops here, with the other option errors
    return config, load_test


def listed_or_checked(config: Config, load_test: LoadTest) -> bool:
    """``--list`` and ``--check``: print and say so, instead of running."""
    if config.list_only:
        click.echo(load_test.describe())
        return True
    if config.check_only:
        mode = "manager" if config.manager else "worker" if config.worker else "standalone"
        click.echo(f"configuration is valid ({mode}, load test hash {load_test.hash()})")
        return True
    return False


def execute(config: Config, load_test: LoadTest) -> int:
    if listed_or_checked(config, load_test):
        return 0
    if config.manager:
        from .gaggle.manager import run_manager

        return loop.run(run_manager(config, load_test))
    if config.worker:
        from .gaggle.worker import run_worker

        return loop.run(run_worker(config, load_test))
    from .standalone import run_standalone

    return loop.run(run_standalone(config, load_test))


def run_command(raw: dict[str, Any], scenarios: Sequence[Scenario] | None = None) -> NoReturn:
    setup_logging(raw.get("verbose") or 0, bool(raw.get("quiet")))
    try:
        config, load_test = prepare(raw, scenarios)
        code = execute(config, load_test)
    except InvalidOption as exc:
        _fail(str(exc), 2)
    except LoadTestError as exc:
        _fail(str(exc), 1)
    sys.exit(code)


def _command(scenarios: Sequence[Scenario] | None, name: str) -> click.Command:
    """The load-test run: ``goose-redis [run] -f FILE`` or, with ``scenarios``, ``python FILE``."""
    if scenarios is None:
        help_text = "Run a load test: standalone, as a Gaggle's --manager, or as one of its --worker."
        extra: dict[str, Any] = {"usage": "[COMMAND] [OPTIONS]", "commands": command_list}
    else:
        help_text = "Run the load test in this file: standalone, as a Gaggle's --manager, or as one of its --worker."
        extra = {}

    @click.command(name=name, cls=GroupedCommand, context_settings=HELP, help=help_text, epilog=ENV_EPILOG,
                   **extra)  # fmt: skip
    @run_options("run" if scenarios is None else "file")
    def command(**raw: Any) -> None:
        run_command(raw, scenarios)

    return command


# The demo's defaults fill every table within a short run: one pass over a scenario is about
# 30 transactions, so the example's 0-3 s waits (Goose's) would take some 45 s per iteration.
DEMO_DEFAULTS = {"users": "8", "hatch_rate": "4", "run_time": "15s"}
DEMO_WAIT = (0.0, 0.5)


@click.command("demo", cls=GroupedCommand, context_settings=HELP, epilog=ENV_EPILOG)
@run_options("demo")
def demo_command(**raw: Any) -> None:
    """Load-test the embedded demo site with the bundled Drupal example.

    Defaults: -u 8 -r 4 -t 15s, and waits of 0-0.5 s between transactions instead of the
    example's 0-3 s, so that every scenario completes iterations within the run.
    The example is examples/drupal_loadtest.py in the repository (goose_redis/examples/ when installed).
    """
    from .demo_site import start_demo_site

    # Defaults for unset options only (an empty value is still checked, and refused); a test plan
    # or an arrival rate brings its own shape.
    if raw.get("test_plan") is None:
        if raw.get("users") is None:
            raw["users"] = DEMO_DEFAULTS["users"]
        if raw.get("startup_time") is None and raw.get("hatch_rate") is None and raw.get("arrival_rate") is None:
            raw["hatch_rate"] = DEMO_DEFAULTS["hatch_rate"]
        if raw.get("iterations") is None and raw.get("run_time") is None:
            raw["run_time"] = DEMO_DEFAULTS["run_time"]

    async def serve_and_run() -> int:
        scenarios = load_file(str(EXAMPLE_FILE))
        for scenario in scenarios:
            scenario.wait = DEMO_WAIT
        site, url = await start_demo_site("127.0.0.1", 0)
        try:
            raw["host"] = url if raw.get("host") is None else raw["host"]
            raw["file"] = str(EXAMPLE_FILE)  # where --processes children load the example from
            config, load_test = prepare(raw, scenarios)
            if listed_or_checked(config, load_test):
                return 0
            if not config.quiet:
                sys.stderr.write(f"demo site serving at {url}\n")
            from .standalone import run_standalone

            return await run_standalone(config, load_test)
        finally:
            await site.cleanup()

    setup_logging(raw.get("verbose") or 0, bool(raw.get("quiet")))
    try:
        code = loop.run(serve_and_run())
    except InvalidOption as exc:
        _fail(str(exc), 2)
    except LoadTestError as exc:
        _fail(str(exc), 1)
    sys.exit(code)


@click.command("demo-site", context_settings=HELP)
@click.option("--bind", default="127.0.0.1", envvar="GOOSE_DEMO_BIND", show_default=True, metavar="ADDRESS",
              help="Address to listen on.")  # fmt: skip
@click.option("--port", default="8080", envvar="GOOSE_DEMO_PORT", show_default=True, metavar="PORT",
              help="Port to listen on (0: any free port).")  # fmt: skip
def demo_site_command(bind: str, port: str) -> None:
    """Serve the embedded demo site: a target for your own load tests."""
    from .demo_site import run_demo_site
    from .validate import check_bind, whole_number

    try:
        number = whole_number("--port", port, 0, 65535)
        check_bind("--bind", bind)
        run_demo_site(bind, number)
    except InvalidOption as exc:
        _fail(str(exc), 2)
    except OSError as exc:  # the port is taken, the address is not ours
        _fail(f"cannot serve the demo site on {bind}:{port}: {exc.strerror or exc}", 1)


@click.command("status", cls=GroupedCommand, context_settings=HELP)
@click_options("status")
def status_command(**raw: Any) -> None:
    """Print a live gaggle's state: manager, workers, users, requests so far."""
    from .gaggle.status import show_status

    setup_logging(0, True)  # errors only: the one line below says what went wrong
    try:
        sys.exit(loop.run(show_status(build_status_config(raw))))
    except InvalidOption as exc:
        _fail(str(exc), 2)
    except LoadTestError as exc:
        _fail(str(exc), 1)


# ignore_unknown_options: in `control users -3`, -3 is a value (refused with its reason), not an option.
@click.command("control", cls=GroupedCommand, context_settings={**HELP, "ignore_unknown_options": True})
@click.argument("command", metavar="COMMAND")
@click.argument("value", metavar="[VALUE]", required=False)
@click_options("control")
def control_command(command: str, value: str | None, **raw: Any) -> None:
    """Steer a live gaggle: users N, hatch-rate R, run-time T, throttle N, test-plan PLAN, start, stop.

    Only the gaggle's Manager applies a command (Workers follow within a second); this prints
    what it did, or why not: exit 0 applied, 1 refused (no such gaggle, no live Manager, the
    run already over), 2 a bad value (checked here first, so a typo never reaches Redis).
    `users N` adds or stops users gaggle-wide (new ones at the hatch rate, the newest stop
    first); `run-time T` counts from now; `start` starts a Manager run with --no-autostart.
    """
    from .commands import check_command
    from .gaggle.remote import control

    setup_logging(0, True)  # errors only: the one line below says what happened
    try:
        cfg = build_remote_config(raw)
        checked = check_command(command, value)
        outcome = loop.run(control(cfg.redis_url, cfg.gaggle, command, checked, cfg.secret, cfg.timeout_s))
    except InvalidOption as exc:
        _fail(str(exc), 2)
    except LoadTestError as exc:
        _fail(str(exc), 1)
    if not outcome.ok:
        _fail(outcome.said, outcome.exit_code)
    click.echo(f"gaggle {cfg.gaggle!r}: {outcome.said}")
    sys.exit(0)


@click.command("dashboard", cls=GroupedCommand, context_settings=HELP)
@click_options("dashboard")
def dashboard_command(**raw: Any) -> None:
    """Serve a live web page of a gaggle, from its Redis alone: figures, charts, controls.

    Watching needs only Redis; steering a gaggle that has a secret needs --gaggle-secret.
    It listens on 127.0.0.1 by default: whoever reaches the page can steer the gaggle, so
    --bind 0.0.0.0 is your decision (put it behind something that checks who comes).
    """
    from .dashboard.gaggle import run_dashboard

    setup_logging(0, False)
    try:
        cfg = build_remote_config(raw)
        code = loop.run(run_dashboard(cfg))
    except InvalidOption as exc:
        _fail(str(exc), 2)
    except LoadTestError as exc:
        _fail(str(exc), 1)
    sys.exit(code)


def _read_report(option: str, path: str) -> dict[str, Any]:
    """A JSON report from disk; InvalidOption (one line) when it is unreadable or not a report."""
    import orjson

    from .compare import check_report

    try:
        data = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise InvalidOption(option, path, f"cannot read the file: {exc.strerror or exc}.") from None
    except orjson.JSONDecodeError as exc:
        raise InvalidOption(option, path, f"not a goose-redis JSON report: not JSON ({exc}).") from None
    return check_report(data, option, path)


@click.command("compare", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("base", metavar="BASE.json")
@click.argument("new", metavar="NEW.json")
@click.option("--max-regression", default="10%", show_default=True, metavar="PCT",
              help="Tolerated growth of a row's p95 or p99, relative to the base.")  # fmt: skip
@click.option("--max-fail-increase", default="1", show_default=True, metavar="POINTS",
              help="Tolerated growth of a row's fail %, in percentage points.")  # fmt: skip
@click.option("--format", "fmt", default="text", show_default=True, metavar="text|md|json",
              help="Output: text for a terminal, md for a pull request, json for a machine.")  # fmt: skip
def compare_command(base: str, new: str, max_regression: str, max_fail_increase: str, fmt: str) -> None:
    """Compare two JSON reports row by row; exit 0 without a regression, 99 with one, 2 on bad input.

    The rule is in docs/verdict.md: a row with enough requests on both sides regresses when its
    p95 or p99 grows by more than --max-regression (and by more than 1 ms), or its fail % by
    more than --max-fail-increase points.
    """
    from .compare import Rule, compare, parse_percent
    from .compare_render import FORMATS, RENDERERS

    try:
        if fmt not in FORMATS:
            raise InvalidOption("--format", fmt, f"The --format option is one of {', '.join(FORMATS)}.")
        rule = Rule(
            max_regression_pct=parse_percent("--max-regression", max_regression),
            max_fail_increase_pp=parse_percent("--max-fail-increase", max_fail_increase),
        )
        base_report, new_report = _read_report("BASE", base), _read_report("NEW", new)
    except InvalidOption as exc:
        _fail(str(exc), 2)
    comparison = compare(base_report, new_report, rule)
    sys.stdout.write(RENDERERS[fmt](comparison, base, new))
    sys.exit(comparison.exit_code)


# Every command but the default load-test run, by its first word. Registering a command here
# is all it takes: ``goose-redis --help`` lists it with the first line of its help.
SUBCOMMANDS: dict[str, click.Command] = {
    "compare": compare_command,
    "control": control_command,
    "dashboard": dashboard_command,
    "demo": demo_command,
    "demo-site": demo_site_command,
    "status": status_command,
}
RUN = "run"  # the default command's own name: ``goose-redis run -f FILE`` = ``goose-redis -f FILE``


def command_list() -> list[tuple[str, str]]:
    """(name, one line) for each command, the default first."""
    rows = [(f"{RUN} (default)", "Run a load test: goose-redis -f FILE [OPTIONS].")]
    for name, command in SUBCOMMANDS.items():
        rows.append((name, command.get_short_help_str(limit=80)))
    return rows


def invoke(command: click.Command, args: list[str], prog_name: str) -> NoReturn:
    """Run a click command; its usage errors become one ``InvalidOption`` line and exit 2."""
    try:
        code = command.main(args, prog_name=prog_name, standalone_mode=False)
    except click.UsageError as exc:
        _fail(str(usage_error(exc, args)), 2)
    except click.Abort:  # Ctrl-C before the run had its own handlers
        sys.stderr.write("\n")
        sys.exit(130)
    except click.ClickException as exc:
        _fail(" ".join(exc.format_message().split()), exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


def entrypoint(argv: Sequence[str] | None = None) -> None:
    """``goose-redis``: a command by its first word, else a load-test run."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        invoke(SUBCOMMANDS[args[0]], args[1:], f"goose-redis {args[0]}")
    if args and args[0] == RUN:
        args = args[1:]
    elif args and not args[0].startswith("-"):
        names = ", ".join([RUN, *SUBCOMMANDS])
        _fail(str(InvalidOption("COMMAND", args[0], f"No such command: use one of {names} (goose-redis --help).")), 2)
    invoke(_command(None, "goose-redis"), args, "goose-redis")


def main(scenarios: Sequence[Scenario] | None = None, argv: Sequence[str] | None = None) -> None:
    """Make a load-test file its own program: ``python my_test.py --host ... -u 8``."""
    if sys._getframe(1).f_globals.get("__name__") == "__mp_main__":
        return  # a --processes child imports the program again: its parent runs the test, not this call
    if scenarios is None:
        scenarios = scenarios_of(sys.modules["__main__"])
    args = list(sys.argv[1:] if argv is None else argv)
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "loadtest"
    invoke(_command(scenarios, prog), args, prog)


if __name__ == "__main__":
    entrypoint()
