"""The options of one run, validated before anything starts.

``build_config`` takes raw option values (strings as typed or read from
``GOOSE_*`` environment variables) and returns a frozen ``Config`` or raises
the one error shape, ``InvalidOption``. Nothing here does I/O.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from .arrival import ArrivalPlan
from .errors import InvalidOption
from .gaggle.auth import MAX_SECRET_BYTES, MIN_SECRET_BYTES, Secret
from .outputs import check_distinct, check_output, per_process
from .report.writers import report_files, report_format
from .shape import Segment, Shape, planned, simple
from .shaping import read_arrival, read_shaping
from .thresholds import Threshold, bind, parse_thresholds
from .validate import (
    MAX_ITERATIONS,
    MAX_RATE,
    MAX_USERS,
    check_bind,
    check_ramp,
    duration,
    gaggle_name,
    positive_number,
    processes,
    redact_url,
    validate_host,
    validate_redis_url,
    whole_number,
)

__all__ = ["Config", "RemoteConfig", "StatusConfig", "build_config", "build_remote_config", "build_status_config",
           "redact_url", "validate_host", "validate_redis_url"]  # fmt: skip

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_HATCH_RATE = 1.0

# Options the Manager decides for the whole gaggle; a Worker must not set them.
MANAGER_ONLY = {
    "users": "--users",
    "hatch_rate": "--hatch-rate",
    "startup_time": "--startup-time",
    "run_time": "--run-time",
    "iterations": "--iterations",
    "host": "--host",
    "test_plan": "--test-plan",
    "throttle_requests": "--throttle-requests",
    "arrival_rate": "--arrival-rate",
    "co_mitigation": "--co-mitigation",
    "report_file": "--report-file",
    "running_metrics": "--running-metrics",
    "expect_workers": "--expect-workers",
    "scenarios": "--scenarios",
    "thresholds": "--threshold",
    "threshold_grace": "--threshold-grace",
}


@dataclass(frozen=True)
class Config:
    users: int
    hatch_rate: float | None
    startup_time_s: float | None
    run_time_s: float | None
    iterations: int | None
    host: str | None
    scenarios: str | None
    timeout_s: float
    reset_metrics: bool
    running_metrics_s: float | None
    report_files: tuple[str, ...]
    request_log: str | None
    verbose: int
    quiet: bool
    list_only: bool = False
    check_only: bool = False
    manager: bool = False
    worker: bool = False
    expect_workers: int = 0
    redis_url: str = DEFAULT_REDIS_URL
    gaggle: str = "default"
    hash_check: bool = True
    stop_on_worker_loss: bool = False
    final_wait_s: float = 30.0
    manager_grace_s: float = 10.0
    resume: str = "auto"  # adopt a run in progress: "auto" (when it can), "always" (--resume), "never"
    redis_deadline_s: float = 60.0
    test_plan: tuple[tuple[float, float], ...] | None = None
    test_plan_text: str | None = None
    throttle_rps: float | None = None
    arrival: ArrivalPlan | None = None
    co_mitigation: str = "disabled"
    thresholds: tuple[Threshold, ...] = ()
    threshold_abort: bool = False
    threshold_grace_s: float = 10.0
    transaction_log: str | None = None
    scenario_log: str | None = None
    error_log: str | None = None
    autostart: bool = True  # --no-autostart: wait for a start command
    controller_port: int | None = None  # standalone: serve the dashboard and its API here
    controller_bind: str = "127.0.0.1"
    gaggle_secret: Secret | None = None  # its repr hides it
    processes: int = 1  # --processes: child engines of this run on this host (procgroup.py)
    file: str | None = None  # -f: where child processes load the load test from (None: the main module)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def hatch_interval_s(self) -> float:
        if self.startup_time_s is not None:
            return self.startup_time_s / self.users if self.users > 1 else 0.0
        return 1.0 / (self.hatch_rate or DEFAULT_HATCH_RATE)

    def shape(self) -> Shape:
        """The run as a load shape (``shape.py``): what every run mode follows."""
        if self.test_plan is not None:
            base = planned(list(self.test_plan), self.hatch_rate or DEFAULT_HATCH_RATE)
        elif self.arrival is not None:
            # The open model: the whole pool at once, then iterations at the arrival rate.
            end = self.arrival.end_s if self.arrival.end_s is not None else self.run_time_s
            base = Shape((Segment(0.0, 0, self.users, 0.0),), end, None, float(self.users), arrival=self.arrival)
        else:
            base = simple(self.users, self.hatch_interval_s, self.run_time_s, reset=self.reset_metrics)
        return replace(base, throttle=self.throttle_rps)


def _restart_options(raw: dict[str, Any], manager: bool, worker: bool) -> tuple[str, float]:
    """(--resume / --no-resume as "always" / "never" / "auto", --manager-grace in seconds)."""
    resume, no_resume = bool(raw.get("resume")), bool(raw.get("no_resume"))
    for flag, given in (("--resume", resume), ("--no-resume", no_resume)):
        if given and not manager:
            raise InvalidOption(flag, "true", f"The {flag} option is for the --manager.")
    if resume and no_resume:
        raise InvalidOption("--no-resume", "true", "The --no-resume option can not be set together with --resume.")
    grace = 10.0
    if _given(raw, "manager_grace"):
        if not worker:
            raise InvalidOption("--manager-grace", raw["manager_grace"],
                                "The --manager-grace option is set on each --worker.")  # fmt: skip
        grace = duration("--manager-grace", raw["manager_grace"])
    return ("always" if resume else "never" if no_resume else "auto"), grace


def _given(raw: dict[str, Any], key: str) -> bool:
    """Set at all: an empty string is a value to reject, not a missing option."""
    return raw.get(key) is not None


# Every per-process log: each Worker writes its own; the Manager runs no users, so it has none.
LOG_OPTIONS = (
    ("--request-log", "request_log"),
    ("--transaction-log", "transaction_log"),
    ("--scenario-log", "scenario_log"),
    ("--error-log", "error_log"),
)


def check_outputs(raw: dict[str, Any], reports: tuple[str, ...], processes: int = 1) -> None:
    """Every output file can be written, and no two share a file (nor overwrite the load test).
    With ``processes`` > 1 each log is one file per process (``outputs.per_process``)."""
    for path in reports:
        report_format(path)  # every format first: the first error is the clearest
    outputs = [("--report-file", path, file) for path in reports for file in report_files(path)]
    for option, key in LOG_OPTIONS:
        log_path = raw.get(key)
        if log_path is None:
            continue
        if raw.get("manager"):
            raise InvalidOption(
                option, log_path, f"The Manager runs no users: give {option} to each Worker (each writes its own)."
            )
        outputs += [(option, str(log_path), file) for file in per_process(str(log_path), processes)]
    for option, path, file in outputs:
        check_output(option, path, file)
    # Inputs no output may overwrite: the -f file, and the program itself (``python my_test.py``).
    program = getattr(sys.modules.get("__main__"), "__file__", None)
    inputs = [("--file", str(raw["file"]))] if raw.get("file") else []
    check_distinct(outputs, [*inputs, *([("load-test program", program)] if program else [])])


def _thresholds(raw: dict[str, Any], names: tuple[Iterable[str], Iterable[str]] | None) -> tuple[
    tuple[Threshold, ...], bool, float
]:  # fmt: skip
    """(thresholds, --threshold-abort, --threshold-grace in seconds); rows checked against
    ``names`` (the load test's transaction and scenario names) when given."""
    thresholds = parse_thresholds(raw.get("thresholds") or ())
    if names is not None:
        thresholds = bind(thresholds, *names)
    abort = bool(raw.get("threshold_abort"))
    if abort and not thresholds:
        raise InvalidOption("--threshold-abort", "true", "The --threshold-abort option needs a --threshold.")
    grace = 10.0
    if raw.get("threshold_grace") is not None:
        if not abort:
            raise InvalidOption(
                "--threshold-grace", raw["threshold_grace"], "The --threshold-grace option needs --threshold-abort."
            )
        grace = duration("--threshold-grace", raw["threshold_grace"], allow_zero=True)
    return thresholds, abort, grace


def gaggle_secret(raw: dict[str, Any]) -> Secret | None:
    """--gaggle-secret (GOOSE_GAGGLE_SECRET) or --gaggle-secret-file: at least 16 bytes. An error
    shows ``***``, never the value."""
    text, path = raw.get("gaggle_secret"), raw.get("gaggle_secret_file")
    if text is not None and path is not None:
        raise InvalidOption("--gaggle-secret-file", path, "Give the secret once: --gaggle-secret (GOOSE_GAGGLE_SECRET) "
                            "or --gaggle-secret-file, not both.")  # fmt: skip
    if path is not None:
        try:
            with open(path, "rb") as f:
                value = f.read(MAX_SECRET_BYTES + 3).rstrip(b"\r\n")  # `openssl rand -hex 32 > f` ends a line
        except OSError as exc:
            raise InvalidOption("--gaggle-secret-file", path, f"cannot read it: {exc.strerror or exc}.") from None
        option = "--gaggle-secret-file"
    elif text is not None:
        value, option = str(text).encode(), "--gaggle-secret"
    else:
        return None
    if not MIN_SECRET_BYTES <= len(value) <= MAX_SECRET_BYTES:
        raise InvalidOption(option, "***" if option == "--gaggle-secret" else path,
                            f"The gaggle secret must be at least {MIN_SECRET_BYTES} bytes (it has {len(value)}): "
                            "for example `openssl rand -hex 32`." if len(value) < MIN_SECRET_BYTES else
                            f"The gaggle secret must be at most {MAX_SECRET_BYTES} bytes.")  # fmt: skip
    return Secret(value)


def build_config(
    raw: dict[str, Any],
    scenario_hosts: list[str | None],
    *,
    row_names: tuple[Iterable[str], Iterable[str]] | None = None,
) -> Config:
    """Turn raw option values into a Config; raise InvalidOption on the first problem.

    ``raw`` uses the click parameter names; unset options are None.
    ``scenario_hosts`` are the hosts the selected scenarios set themselves;
    ``row_names`` their (transaction names, scenario names), which a threshold's ROW may name.
    """
    manager, worker = bool(raw.get("manager")), bool(raw.get("worker"))
    if manager and worker:
        raise InvalidOption(
            "--worker", "true", "The --worker option can not be set together with the --manager option."
        )
    if raw.get("expect_workers") is not None and not manager:
        raise InvalidOption(
            "--expect-workers", raw["expect_workers"], "The --expect-workers option is only for the --manager."
        )
    if worker:
        for key, option in MANAGER_ONLY.items():
            value = raw.get(key)
            if value not in (None, (), []):
                shown = " ".join(value) if isinstance(value, tuple | list) else value
                raise InvalidOption(
                    option, shown, f"The {option} option is set on the Manager; a Worker takes it from the Manager."
                )
        if raw.get("no_reset_metrics"):
            raise InvalidOption("--no-reset-metrics", "true", "The --no-reset-metrics option is set on the Manager.")
        if raw.get("threshold_abort"):
            raise InvalidOption("--threshold-abort", "true", "The --threshold-abort option is set on the Manager.")
    shaping = read_shaping(raw)

    users = os.cpu_count() or 1
    if _given(raw, "users"):
        users = whole_number("--users", raw["users"], 1, MAX_USERS)
    if shaping.plan_peak is not None:
        users = shaping.plan_peak
    # The Manager's own options first: the walk-through's first error is about --expect-workers.
    expect_workers = 0
    if manager:
        wanted = raw["expect_workers"] if _given(raw, "expect_workers") else "0"
        expect_workers = whole_number("--expect-workers", wanted, 1, MAX_USERS)
        if expect_workers > users:
            raise InvalidOption(
                "--expect-workers",
                expect_workers,
                "The --expect-workers option can not be set to a value larger than --users option.",
            )
    hatch_rate = positive_number("--hatch-rate", raw["hatch_rate"], MAX_RATE) if _given(raw, "hatch_rate") else None
    startup = duration("--startup-time", raw["startup_time"]) if _given(raw, "startup_time") else None
    if hatch_rate is not None and startup is not None:
        raise InvalidOption(
            "--startup-time",
            raw["startup_time"],
            "The --startup-time option can not be set together with --hatch-rate.",
        )
    if startup is None and hatch_rate is None and raw.get("arrival_rate") is None:
        hatch_rate = DEFAULT_HATCH_RATE
    check_ramp(users, hatch_rate, raw.get("hatch_rate"))
    run_time = duration("--run-time", raw["run_time"], allow_zero=True) if _given(raw, "run_time") else None
    iterations = (
        whole_number("--iterations", raw["iterations"], 1, MAX_ITERATIONS) if _given(raw, "iterations") else None
    )
    if run_time is not None and iterations is not None:
        raise InvalidOption(
            "--run-time", raw["run_time"], "The --run-time option can not be set together with --iterations."
        )
    timeout = duration("--timeout", raw["timeout"]) if _given(raw, "timeout") else 60.0
    running = duration("--running-metrics", raw["running_metrics"]) if _given(raw, "running_metrics") else None
    reports = tuple(raw.get("report_file") or ())
    request_log = raw.get("request_log")

    host = None
    if raw.get("host") is not None:
        host = validate_host("--host", str(raw["host"]))
    list_only = bool(raw.get("list_only"))
    if host is None and not worker and not list_only:
        missing = [h for h in scenario_hosts if not h]
        if missing or not scenario_hosts:
            raise InvalidOption(
                "--host", "", "A host must be defined via the --host option or by every scenario (Scenario(host=...))."
            )
    for h in scenario_hosts:
        if h:
            validate_host("scenario host", h)

    redis_url = validate_redis_url(str(raw["redis_url"])) if raw.get("redis_url") is not None else DEFAULT_REDIS_URL
    gaggle = gaggle_name(raw["gaggle"]) if raw.get("gaggle") is not None else "default"
    final_wait = duration("--final-wait", raw["final_wait"]) if _given(raw, "final_wait") else 30.0
    redis_timeout = duration("--redis-timeout", raw["redis_timeout"]) if _given(raw, "redis_timeout") else 60.0
    resume, grace = _restart_options(raw, manager, worker)
    thresholds, threshold_abort, threshold_grace = _thresholds(raw, row_names)
    controller_port, controller_bind = _controller(raw, manager, worker)
    secret = gaggle_secret(raw)
    procs = _processes(raw, manager)
    check_outputs(raw, reports, procs)  # last: the only check that touches the file system

    return Config(
        users=users,
        hatch_rate=hatch_rate,
        startup_time_s=startup,
        run_time_s=run_time,
        iterations=iterations,
        host=host,
        scenarios=raw.get("scenarios"),
        timeout_s=timeout,
        reset_metrics=not raw.get("no_reset_metrics"),
        running_metrics_s=running,
        report_files=reports,
        request_log=request_log,
        verbose=int(raw.get("verbose") or 0),
        quiet=bool(raw.get("quiet")),
        list_only=list_only,
        check_only=bool(raw.get("check")),
        manager=manager,
        worker=worker,
        expect_workers=expect_workers,
        redis_url=redis_url,
        gaggle=gaggle,
        hash_check=not raw.get("no_hash_check"),
        stop_on_worker_loss=bool(raw.get("stop_on_worker_loss")),
        final_wait_s=final_wait,
        redis_deadline_s=redis_timeout,
        resume=resume,
        manager_grace_s=grace,
        test_plan=shaping.test_plan,
        test_plan_text=raw.get("test_plan"),
        throttle_rps=shaping.throttle,
        arrival=read_arrival(raw, run_time),
        co_mitigation=shaping.co_mitigation,
        thresholds=thresholds,
        threshold_abort=threshold_abort,
        threshold_grace_s=threshold_grace,
        transaction_log=raw.get("transaction_log") or None,
        scenario_log=raw.get("scenario_log") or None,
        error_log=raw.get("error_log") or None,
        autostart=not raw.get("no_autostart"),
        controller_port=controller_port,
        controller_bind=controller_bind,
        gaggle_secret=secret,
        processes=procs,
        file=str(raw["file"]) if raw.get("file") else None,
    )


def _controller(raw: dict[str, Any], manager: bool, worker: bool) -> tuple[int | None, str]:
    """--controller-port/--controller-bind (a standalone run's dashboard) and --no-autostart."""
    port = raw.get("controller_port")
    bind = raw.get("controller_bind")
    if raw.get("no_autostart") and worker:
        raise InvalidOption("--no-autostart", "true", "The --no-autostart option is set on the Manager: "
                            "its Workers wait at the barrier until `goose-redis control start`.")  # fmt: skip
    if port is not None and (manager or worker):
        raise InvalidOption("--controller-port", port, "A gaggle is steered and watched through Redis: run "
                            "`goose-redis dashboard --redis-url URL` (or `goose-redis control`) instead.")  # fmt: skip
    if bind is not None and port is None:
        raise InvalidOption("--controller-bind", bind, "The --controller-bind option needs --controller-port.")
    if raw.get("no_autostart") and not manager and port is None:
        raise InvalidOption("--no-autostart", "true", "A standalone run with --no-autostart needs "
                            "--controller-port: its page or API is what starts it.")  # fmt: skip
    number = whole_number("--controller-port", port, 0, 65535) if port is not None else None
    return number, check_bind("--controller-bind", str(bind)) if bind is not None else "127.0.0.1"


def _processes(raw: dict[str, Any], manager: bool) -> int:
    if raw.get("processes") is None:
        return 1
    if manager:
        raise InvalidOption(
            "--processes", raw["processes"], "The Manager runs no users: give --processes to each Worker."
        )
    return processes("--processes", raw["processes"])


DEFAULT_STATUS_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class StatusConfig:
    """``goose-redis status``: where to look, and how long to try."""

    redis_url: str = DEFAULT_REDIS_URL
    gaggle: str = "default"
    timeout_s: float = DEFAULT_STATUS_TIMEOUT_S
    as_json: bool = False


def build_status_config(raw: dict[str, Any]) -> StatusConfig:
    """The same rules for --redis-url and --gaggle as a run's; --timeout bounds the whole call."""
    return StatusConfig(
        redis_url=validate_redis_url(str(raw["redis_url"])) if _given(raw, "redis_url") else DEFAULT_REDIS_URL,
        gaggle=gaggle_name(raw["gaggle"]) if _given(raw, "gaggle") else "default",
        timeout_s=(
            duration("--timeout", raw["status_timeout"]) if _given(raw, "status_timeout") else DEFAULT_STATUS_TIMEOUT_S
        ),
        as_json=bool(raw.get("as_json")),
    )


DEFAULT_CONTROL_TIMEOUT_S = 5.0
DEFAULT_DASHBOARD_PORT = 8089


@dataclass(frozen=True)
class RemoteConfig:
    """``goose-redis control`` and ``goose-redis dashboard``: which gaggle, and how to reach it."""

    redis_url: str = DEFAULT_REDIS_URL
    gaggle: str = "default"
    secret: Secret | None = None  # --gaggle-secret: steering a gaggle that has one needs it
    timeout_s: float = DEFAULT_CONTROL_TIMEOUT_S
    bind: str = "127.0.0.1"
    port: int = DEFAULT_DASHBOARD_PORT


def build_remote_config(raw: dict[str, Any]) -> RemoteConfig:
    """The same rules for --redis-url and --gaggle as a run's; an empty secret is a mistake, not none."""
    secret = gaggle_secret(raw)  # the same rules as a run's (at least 16 bytes; or from a file)
    return RemoteConfig(
        redis_url=validate_redis_url(str(raw["redis_url"])) if _given(raw, "redis_url") else DEFAULT_REDIS_URL,
        gaggle=gaggle_name(raw["gaggle"]) if _given(raw, "gaggle") else "default",
        secret=secret,
        timeout_s=(
            duration("--timeout", raw["control_timeout"]) if _given(raw, "control_timeout")
            else DEFAULT_CONTROL_TIMEOUT_S
        ),  # fmt: skip
        bind=check_bind("--bind", str(raw["dashboard_bind"])) if _given(raw, "dashboard_bind") else "127.0.0.1",
        port=(
            whole_number("--port", raw["dashboard_port"], 0, 65535) if _given(raw, "dashboard_port")
            else DEFAULT_DASHBOARD_PORT
        ),  # fmt: skip
    )
