"""The command line: parse, validate, run. The only place errors become exit codes.

goose-redis -f FILE [options]      run a load test (standalone, --manager or --worker)
goose-redis demo [options]         run the bundled Drupal-like example against the embedded demo site
goose-redis demo-site              serve the demo site (a target for your own tests)
goose-redis status                 print a live gaggle's state from Redis
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from . import __version__, loop
from .config import DEFAULT_REDIS_URL, Config, build_config
from .errors import InvalidOption, LoadTestError
from .loader import load_file, scenarios_of
from .logs import setup_logging
from .options import GroupedCommand, click_options
from .scenario import LoadTest, Scenario, filter_scenarios

log = logging.getLogger("goose_redis")

EXAMPLE_FILE = Path(__file__).resolve().parent.parent / "examples" / "drupal_loadtest.py"


def _fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"Error: {message}\n")
    sys.exit(code)


def run_options(where: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The load-test options (``options.OPTIONS``) that apply ``where``, plus ``--version``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = click.version_option(__version__, "--version", prog_name="goose-redis")(fn)
        return click_options(where)(fn)

    return decorate


def prepare(raw: dict[str, Any], scenarios: Sequence[Scenario] | None) -> tuple[Config, LoadTest]:
    """Load, filter and validate: every user error raises InvalidOption here, before anything starts."""
    if scenarios is None:
        if not raw.get("file"):
            raise InvalidOption("--file", "", "A load-test file is required: goose-redis -f FILE.")
        scenarios = load_file(raw["file"])
    chosen = filter_scenarios(scenarios, raw.get("scenarios"))
    load_test = LoadTest(chosen, scenarios)
    config = build_config(raw, load_test.hosts())
    loop.choose()  # a bad GOOSE_EVENT_LOOP stops here, with the other option errors
    return config, load_test


def execute(config: Config, load_test: LoadTest) -> int:
    if config.list_only:
        click.echo(load_test.describe())
        return 0
    if config.check_only:
        mode = "manager" if config.manager else "worker" if config.worker else "standalone"
        click.echo(f"configuration is valid ({mode}, load test hash {load_test.hash()})")
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
    @click.command(name=name, cls=GroupedCommand, context_settings={"help_option_names": ["-h", "--help"]},
                   epilog=__doc__)  # fmt: skip
    @run_options("run")
    def command(**raw: Any) -> None:
        run_command(raw, scenarios)

    return command


@click.command("demo", cls=GroupedCommand, context_settings={"help_option_names": ["-h", "--help"]})
@run_options("demo")
def demo_command(**raw: Any) -> None:
    """Start the embedded demo site and load-test it with examples/drupal_loadtest.py."""
    from .demo_site import start_demo_site

    raw["file"] = raw.get("file") or str(EXAMPLE_FILE)
    raw["users"] = raw.get("users") or "8"
    if not raw.get("startup_time"):
        raw["hatch_rate"] = raw.get("hatch_rate") or "4"
    if not raw.get("iterations"):
        raw["run_time"] = raw.get("run_time") or "20s"

    async def serve_and_run() -> int:
        site, url = await start_demo_site("127.0.0.1", 0)
        try:
            raw["host"] = raw.get("host") or url
            config, load_test = prepare(raw, None)
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
    sys.exit(code)


@click.command("demo-site", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bind", default="127.0.0.1", envvar="GOOSE_DEMO_BIND", show_default=True)
@click.option("--port", default=8080, type=int, envvar="GOOSE_DEMO_PORT", show_default=True)
def demo_site_command(bind: str, port: int) -> None:
    """Serve the embedded demo site (the default target)."""
    from .demo_site import run_demo_site

    run_demo_site(bind, port)


@click.command("status", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--redis-url", envvar="GOOSE_REDIS_URL", default=DEFAULT_REDIS_URL, show_default=True)
@click.option("--gaggle", envvar="GOOSE_GAGGLE", default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
def status_command(redis_url: str, gaggle: str, as_json: bool) -> None:
    """Print a live gaggle's state: manager, workers, users, requests so far."""
    from .gaggle.status import show_status

    setup_logging(0, False)
    try:
        sys.exit(loop.run(show_status(redis_url, gaggle, as_json)))
    except InvalidOption as exc:
        _fail(str(exc), 2)
    except LoadTestError as exc:
        _fail(str(exc), 1)


SUBCOMMANDS: dict[str, click.Command] = {
    "demo": demo_command,
    "demo-site": demo_site_command,
    "status": status_command,
}


def entrypoint(argv: Sequence[str] | None = None) -> None:
    """``goose-redis``: a subcommand by its first word, else a load-test run."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        SUBCOMMANDS[args[0]].main(args[1:], prog_name=f"goose-redis {args[0]}")
    else:
        _command(None, "goose-redis").main(args, prog_name="goose-redis")


def main(scenarios: Sequence[Scenario] | None = None, argv: Sequence[str] | None = None) -> None:
    """Make a load-test file its own program: ``python my_test.py --host ... -u 8``."""
    if scenarios is None:
        scenarios = scenarios_of(sys.modules["__main__"])
    args = list(sys.argv[1:] if argv is None else argv)
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "loadtest"
    _command(scenarios, prog).main(args, prog_name=prog)


if __name__ == "__main__":
    entrypoint()
