"""Every command-line option of a load-test run, in one table.

Each row becomes a click option (in ``cli.py``) that also reads ``GOOSE_<NAME>``
from the environment. Rows carry a help *group* (the sections of ``--help``)
and a *metavar* that says what kind of value is wanted, so ``--help`` reads as
a manual rather than a list of TEXT. Values stay raw strings here: ``config``
validates them, so an error names the option the user typed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import click

# Help sections, in the order ``--help`` shows them.
LOAD, SHAPING, GAGGLE, REPORTS, LOGGING, OTHER = "Load", "Shaping", "Gaggle", "Reports", "Logging", "Other"
VERDICT = "Verdict"
GROUPS = (LOAD, SHAPING, GAGGLE, REPORTS, VERDICT, LOGGING, OTHER)

# Goose's Gaggle flags for its socket between Manager and Workers; goose-redis meets in Redis.
GOOSE_SOCKET_FLAGS = ("--manager-host", "--manager-port", "--manager-bind-host", "--manager-bind-port")


@dataclass(frozen=True)
class Opt:
    flags: tuple[str, ...]
    dest: str
    group: str
    help: str
    metavar: str | None = None
    env: bool = True  # also read GOOSE_<DEST>
    flag: bool = False
    count: bool = False
    multiple: bool = False
    env_split: str | None = None  # a multiple option's GOOSE_<DEST> splits on this, not whitespace
    hidden: bool = False  # parsed but not in --help (Goose's flags that get a pointed answer)
    # Where the option applies: "run" (goose-redis [run] -f FILE), "file" (python FILE), "demo".
    where: frozenset[str] = frozenset({"run", "file", "demo"})

    @property
    def envvar(self) -> str | None:
        return f"GOOSE_{self.dest.upper()}" if self.env else None


# Options of a real load test (not the demo), and -f, which only the goose-redis command takes.
RUN_ONLY = frozenset({"run", "file"})
FILE_FLAG = frozenset({"run"})
STATUS = frozenset({"status"})
RUN_AND_STATUS = frozenset({"run", "file", "status"})
CONTROL, DASHBOARD = "control", "dashboard"
REMOTE = frozenset({"run", "file", "status", CONTROL, DASHBOARD})  # who reads a gaggle's Redis
STEERS = frozenset({CONTROL, DASHBOARD})

OPTIONS: tuple[Opt, ...] = (
    # -- Load
    Opt(("-f", "--file"), "file", LOAD, "Load-test file (Python) defining Scenarios.", "PATH", where=FILE_FLAG),
    Opt(("-H", "--host"), "host", LOAD, "Target host, e.g. http://127.0.0.1:8080.", "URL"),
    Opt(("-u", "--users"), "users", LOAD, "Users to launch [default: CPU cores].", "N"),
    Opt(("-r", "--hatch-rate"), "hatch_rate", LOAD, "Users launched per second [default: 1].", "RATE"),
    Opt(("-s", "--startup-time"), "startup_time", LOAD, "Launch all users over this time (instead of -r).", "TIME"),
    Opt(("-t", "--run-time"), "run_time", LOAD, "Run time after all users are launched: 30s, 2m, 1h30m.", "TIME"),
    Opt(("--iterations",), "iterations", LOAD, "Each user runs its scenario N times, then exits.", "N"),
    Opt(("--scenarios",), "scenarios", LOAD, "Run only these scenarios (machine names, * wildcard, comma-separated).",
        "LIST"),  # fmt: skip
    Opt(("--timeout",), "timeout", LOAD, "Per-request timeout [default: 60s].", "TIME"),
    Opt(("--processes",), "processes", LOAD,
        "Run the users in N processes of this host (auto: one per usable core); one report [default: 1].",
        "N|auto"),  # fmt: skip
    # -- Shaping
    Opt(("--test-plan",), "test_plan", SHAPING,
        'Users over time, Goose\'s grammar: "10,1m;10,5m;0,0s" (ramp to 10 in 1m, hold 5m, stop). '
        "Replaces -u/-r/-s/-t/--iterations.", "PLAN"),  # fmt: skip
    Opt(("--throttle-requests",), "throttle_requests", SHAPING,
        "At most this many requests per second, across the whole gaggle.", "RATE"),  # fmt: skip
    Opt(("--arrival-rate",), "arrival_rate", SHAPING,
        "Open model: start scenario iterations at RATE per second on a pool of -u users, whatever the "
        'response times; or a rate plan "RATE,TIME;..." (linear ramps).', "RATE|PLAN"),  # fmt: skip
    Opt(("--co-mitigation",), "co_mitigation", SHAPING,
        "Coordinated-omission mitigation: disabled, average, minimum or maximum [default: disabled].", "MODE"),
    # -- Gaggle
    Opt(("--manager",), "manager", GAGGLE, "Run as the Gaggle Manager.", flag=True, where=RUN_ONLY),
    Opt(("--worker",), "worker", GAGGLE, "Run as a Gaggle Worker.", flag=True, where=RUN_ONLY),
    Opt(("--expect-workers",), "expect_workers", GAGGLE, "Manager: Workers to wait for.", "N", where=RUN_ONLY),
    Opt(("--redis-url",), "redis_url", GAGGLE, "Redis that the gaggle meets at [default: redis://127.0.0.1:6379/0].",
        "URL", where=REMOTE),  # fmt: skip
    Opt(("--gaggle",), "gaggle", GAGGLE, "Gaggle name: namespaces every Redis key [default: default].", "NAME",
        where=REMOTE),  # fmt: skip
    Opt(("--no-autostart",), "no_autostart", GAGGLE,
        "Hold the run until `goose-redis control start` (a Manager: its ready Workers wait at the barrier) "
        "or the page's Start (a standalone run with --controller-port).", flag=True, where=RUN_ONLY),  # fmt: skip
    Opt(("--controller-port",), "controller_port", GAGGLE,
        "Standalone: serve the live dashboard and its JSON API on this port (0: any free port); "
        "for a gaggle use `goose-redis dashboard`.", "PORT", where=RUN_ONLY),  # fmt: skip
    Opt(("--controller-bind",), "controller_bind", GAGGLE,
        "Address the --controller-port listens on [default: 127.0.0.1; anyone who reaches it can steer the run].",
        "ADDRESS", where=RUN_ONLY),  # fmt: skip
    Opt(("--no-hash-check",), "no_hash_check", GAGGLE, "Let Workers with a different load test join.", flag=True,
        where=RUN_ONLY),  # fmt: skip
    Opt(("--stop-on-worker-loss",), "stop_on_worker_loss", GAGGLE, "Manager: stop the gaggle when a Worker is lost.",
        flag=True, where=RUN_ONLY),  # fmt: skip
    Opt(("--gaggle-secret",), "gaggle_secret", GAGGLE,
        "Sign and check every message of the gaggle with this shared secret (at least 16 bytes; the Manager and "
        "every Worker need the same; control and the dashboard need it to steer, never to watch). Prefer "
        "GOOSE_GAGGLE_SECRET: a command line shows in ps.", "SECRET", where=RUN_ONLY | STEERS),  # fmt: skip
    Opt(("--gaggle-secret-file",), "gaggle_secret_file", GAGGLE,
        "Read the gaggle secret from this file (a Docker or Kubernetes secret).", "PATH",
        where=RUN_ONLY | STEERS),  # fmt: skip
    Opt(("--redis-timeout",), "redis_timeout", GAGGLE,
        "Stop with an error when Redis stays unreachable this long [default: 60s].", "TIME", where=RUN_ONLY),
    Opt(("--final-wait",), "final_wait", GAGGLE, "Manager: wait this long for Workers' final metrics [default: 30s].",
        "TIME", where=RUN_ONLY),  # fmt: skip
    Opt(("--resume",), "resume", GAGGLE,
        "Manager: adopt the gaggle's run in progress (left by a Manager that is gone), or fail. By default it is "
        "adopted when it is the same test and its Workers are alive.", flag=True, where=RUN_ONLY),  # fmt: skip
    Opt(("--no-resume",), "no_resume", GAGGLE,
        "Manager: start a fresh run even when the gaggle has a run in progress to adopt (its Workers stop).",
        flag=True, where=RUN_ONLY),  # fmt: skip
    Opt(("--manager-grace",), "manager_grace", GAGGLE,
        "Worker: keep running this long without hearing from the Manager, the time to restart a crashed one "
        "[default: 10s].", "TIME", where=RUN_ONLY),  # fmt: skip
    # Goose's Gaggle talks over a socket; these flags get a one-line answer naming --redis-url (clierrors.py).
    *(Opt((flag,), flag[2:].replace("-", "_"), GAGGLE, "Goose's flag: answered with its --redis-url form.", "VALUE",
          env=False, hidden=True, where=RUN_ONLY)
      for flag in GOOSE_SOCKET_FLAGS),  # fmt: skip
    # -- Reports
    Opt(("--no-reset-metrics",), "no_reset_metrics", REPORTS, "Keep ramp-up metrics in the totals.", flag=True),
    Opt(("--running-metrics",), "running_metrics", REPORTS, "Print the tables every TIME while running.", "TIME"),
    Opt(("--report-file",), "report_file", REPORTS, "Write a report: .json, .html, .md, .csv (repeatable).", "PATH",
        multiple=True),  # fmt: skip
    # -- Verdict
    Opt(("--threshold",), "thresholds", VERDICT,
        "Fail the run (exit 99) unless '[ROW:] METRIC OP VALUE' holds at the end, e.g. 'p95 < 500' "
        "(repeatable; GOOSE_THRESHOLDS separates them with ';'). See docs/verdict.md.", "EXPR",
        multiple=True, env_split=";"),  # fmt: skip
    Opt(("--threshold-abort",), "threshold_abort", VERDICT,
        "Stop the run (the whole gaggle) as soon as a threshold has clearly failed, after the grace period.",
        flag=True),  # fmt: skip
    Opt(("--threshold-grace",), "threshold_grace", VERDICT,
        "With --threshold-abort: no abort before this much of the measured period [default: 10s].", "TIME"),
    # -- Logging
    Opt(("-R", "--request-log"), "request_log", LOGGING, "Write one JSON line per request to this file.", "PATH"),
    Opt(("-T", "--transaction-log"), "transaction_log", LOGGING,
        "Write one JSON line per transaction run to this file.", "PATH"),  # fmt: skip
    Opt(("-S", "--scenario-log"), "scenario_log", LOGGING, "Write one JSON line per scenario iteration to this file.",
        "PATH"),  # fmt: skip
    Opt(("-E", "--error-log"), "error_log", LOGGING,
        "Write one JSON line per failed request or exception raised by a transaction to this file.", "PATH"),
    Opt(("-v", "--verbose"), "verbose", LOGGING, "More logging (-v info, -vv debug).", count=True, env=False),
    Opt(("-q", "--quiet"), "quiet", LOGGING, "No progress line, errors only.", flag=True),
    # -- Other
    Opt(("-l", "--list"), "list_only", OTHER, "List scenarios and transactions and exit.", flag=True, env=False,
        where=RUN_ONLY),  # fmt: skip
    Opt(("--check",), "check", OTHER, "Validate every option and exit.", flag=True, env=False),
    # -- goose-redis status
    Opt(("--timeout",), "status_timeout", OTHER, "Give up when Redis has not answered within TIME [default: 3s].",
        "TIME", where=STATUS),  # fmt: skip
    Opt(("--json",), "as_json", OTHER, "Print the state as JSON.", flag=True, env=False, where=STATUS),
    # -- goose-redis control / dashboard
    Opt(("--timeout",), "control_timeout", OTHER, "Give up when the Manager has not answered within TIME "
        "[default: 5s].", "TIME", where=frozenset({CONTROL})),  # fmt: skip
    Opt(("--bind",), "dashboard_bind", OTHER, "Address to serve the dashboard on [default: 127.0.0.1].", "ADDRESS",
        where=frozenset({DASHBOARD})),  # fmt: skip
    Opt(("--port",), "dashboard_port", OTHER, "Port to serve the dashboard on (0: any free port) [default: 8089].",
        "PORT", where=frozenset({DASHBOARD})),  # fmt: skip
)


class SplitOn(click.ParamType):
    """A string whose ``multiple`` option splits its environment variable on ``sep`` (click
    splits on whitespace, and an expression like ``p95 < 500`` holds spaces)."""

    name = "text"

    def __init__(self, sep: str) -> None:
        self.sep = sep

    def split_envvar_value(self, rv: str) -> list[str]:
        return [part.strip() for part in rv.split(self.sep) if part.strip()]


class GroupedOption(click.Option):
    """A click option that remembers its help section."""

    def __init__(self, *args: Any, group: str = OTHER, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group


class GroupedCommand(click.Command):
    """``--help`` with the options under their sections (Load, Shaping, Gaggle, ...).

    ``usage`` replaces click's ``[OPTIONS]`` on the usage line, and ``commands`` (a callable,
    so commands registered later still appear) adds a Commands section: the top-level
    ``goose-redis --help`` uses both.
    """

    def __init__(self, *args: Any, usage: str | None = None,
                 commands: Callable[[], list[tuple[str, str]]] | None = None, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.usage = usage
        self.commands = commands

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [self.usage] if self.usage else super().collect_usage_pieces(ctx)

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_help_text(ctx, formatter)
        if self.commands is not None:
            with formatter.section("Commands"):
                formatter.write_dl(self.commands())

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            if isinstance(param, click.Argument):
                continue  # named on the usage line and in the command's help text
            record = param.get_help_record(ctx)
            if record is not None:
                sections.setdefault(getattr(param, "group", OTHER), []).append(record)
        for group in (*GROUPS, *sorted(set(sections) - set(GROUPS))):
            if sections.get(group):
                with formatter.section(f"{group} options"):
                    formatter.write_dl(sections[group])


def click_options(where: str, extra: Iterable[Opt] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a click command with every option that applies ``where``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed([*OPTIONS, *extra]):
            if where not in opt.where:
                continue
            kwargs: dict[str, Any] = {"help": opt.help, "envvar": opt.envvar, "group": opt.group, "cls": GroupedOption,
                                      "hidden": opt.hidden}  # fmt: skip
            if opt.flag:
                kwargs["is_flag"] = True
            elif opt.count:
                kwargs["count"] = True
            else:
                kwargs["metavar"] = opt.metavar
                kwargs["multiple"] = opt.multiple
                if opt.env_split:
                    kwargs["type"] = SplitOn(opt.env_split)
            fn = click.option(*opt.flags, opt.dest, **kwargs)(fn)
        return fn

    return decorate
