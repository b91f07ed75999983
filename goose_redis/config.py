"""The options of one run, validated before anything starts.

``build_config`` takes raw option values (strings as typed or read from
``GOOSE_*`` environment variables) and returns a frozen ``Config`` or raises
the one error shape, ``InvalidOption``. Nothing here does I/O.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from .arrival import ArrivalPlan, parse_arrival
from .co import MODES as CO_MODES
from .durations import parse_duration
from .errors import InvalidOption
from .report.writers import report_format
from .shape import Segment, Shape, parse_plan, planned, simple
from .thresholds import Threshold, bind, parse_thresholds

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


def _int(option: str, raw: str, minimum: int, detail: str) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise InvalidOption(option, raw, f"The {option} option must be a whole number.") from None
    if value < minimum:
        raise InvalidOption(option, raw, detail)
    return value


def _float(option: str, raw: str) -> float:
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise InvalidOption(option, raw, f"The {option} option must be a number.") from None
    if not value > 0 or value == float("inf"):
        raise InvalidOption(option, raw, f"The {option} option must be greater than 0.")
    return value


def _duration(option: str, raw: str, allow_zero: bool = False) -> float:
    try:
        value = parse_duration(str(raw))
    except ValueError as exc:
        raise InvalidOption(option, raw, f"The {option} option is not a duration: {exc}.") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidOption(option, raw, f"The {option} option must be longer than 0 seconds.")
    return value


def validate_host(option: str, host: str) -> str:
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidOption(option, host, "The host must be an http:// or https:// URL, like http://127.0.0.1:8080.")
    return host.rstrip("/")


def validate_redis_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise InvalidOption(
            "--redis-url", redact_url(url), "The Redis URL must start with redis://, rediss:// or unix://."
        )
    return url


def redact_url(url: str) -> str:
    """The URL with its password replaced, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}" if user else f":***@{host}"
    return parts._replace(netloc=netloc).geturl()


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
        grace = _duration("--threshold-grace", raw["threshold_grace"], allow_zero=True)
    return thresholds, abort, grace


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
    shaping = _shaping(raw)

    users = (
        _int("--users", raw["users"], 1, "The --users option must be set to at least 1.")
        if raw.get("users") is not None
        else (os.cpu_count() or 1)
    )
    if shaping["test_plan"] is not None:
        users = max(1, max(int(u) for u, _ in shaping["test_plan"]))
    # The Manager's own options first: the walk-through's first error is about --expect-workers.
    expect_workers = 0
    if manager:
        expect_workers = _int(
            "--expect-workers",
            raw.get("expect_workers") or "0",
            1,
            "The --expect-workers option must be set to at least 1.",
        )
        if expect_workers > users:
            raise InvalidOption(
                "--expect-workers",
                expect_workers,
                "The --expect-workers option can not be set to a value larger than --users option.",
            )
    hatch_rate = _float("--hatch-rate", raw["hatch_rate"]) if raw.get("hatch_rate") is not None else None
    startup = _duration("--startup-time", raw["startup_time"]) if raw.get("startup_time") is not None else None
    if hatch_rate is not None and startup is not None:
        raise InvalidOption(
            "--startup-time",
            raw["startup_time"],
            "The --startup-time option can not be set together with --hatch-rate.",
        )
    if startup is None and hatch_rate is None and raw.get("arrival_rate") is None:
        hatch_rate = DEFAULT_HATCH_RATE
    run_time = _duration("--run-time", raw["run_time"], allow_zero=True) if raw.get("run_time") is not None else None
    iterations = (
        _int("--iterations", raw["iterations"], 1, "The --iterations option must be set to at least 1.")
        if raw.get("iterations") is not None
        else None
    )
    if run_time is not None and iterations is not None:
        raise InvalidOption(
            "--run-time", raw["run_time"], "The --run-time option can not be set together with --iterations."
        )
    timeout = _duration("--timeout", raw["timeout"]) if raw.get("timeout") is not None else 60.0
    running = _duration("--running-metrics", raw["running_metrics"]) if raw.get("running_metrics") is not None else None
    reports = tuple(raw.get("report_file") or ())
    for path in reports:
        report_format(path)

    host = validate_host("--host", raw["host"]) if raw.get("host") else None
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

    gaggle = str(raw.get("gaggle") or "default")
    if not gaggle.replace("-", "").replace("_", "").replace(".", "").isalnum() or len(gaggle) > 64:
        raise InvalidOption(
            "--gaggle", gaggle, "The gaggle name may hold letters, digits, '-', '_' and '.' (at most 64)."
        )
    final_wait = _duration("--final-wait", raw["final_wait"]) if raw.get("final_wait") is not None else 30.0
    redis_timeout = _duration("--redis-timeout", raw["redis_timeout"]) if raw.get("redis_timeout") is not None else 60.0
    thresholds, threshold_abort, threshold_grace = _thresholds(raw, row_names)

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
        request_log=raw.get("request_log"),
        verbose=int(raw.get("verbose") or 0),
        quiet=bool(raw.get("quiet")),
        list_only=list_only,
        check_only=bool(raw.get("check")),
        manager=manager,
        worker=worker,
        expect_workers=expect_workers,
        redis_url=validate_redis_url(str(raw.get("redis_url") or DEFAULT_REDIS_URL)),
        gaggle=gaggle,
        hash_check=not raw.get("no_hash_check"),
        stop_on_worker_loss=bool(raw.get("stop_on_worker_loss")),
        final_wait_s=final_wait,
        redis_deadline_s=redis_timeout,
        test_plan=shaping["test_plan"],
        test_plan_text=raw.get("test_plan"),
        throttle_rps=shaping["throttle"],
        arrival=parse_arrival("--arrival-rate", raw["arrival_rate"], run_time) if raw.get("arrival_rate") else None,
        co_mitigation=shaping["co"],
        thresholds=thresholds,
        threshold_abort=threshold_abort,
        threshold_grace_s=threshold_grace,
        transaction_log=raw.get("transaction_log") or None,
        scenario_log=raw.get("scenario_log") or None,
        error_log=raw.get("error_log") or None,
    )


# Options a test plan replaces (Goose: --test-plan "can not be set together with" them).
PLAN_REPLACES = {
    "users": "--users",
    "hatch_rate": "--hatch-rate",
    "startup_time": "--startup-time",
    "run_time": "--run-time",
    "iterations": "--iterations",
}
# The open model launches its pool at once and runs iterations by the clock, not per user.
ARRIVAL_EXCLUDES = {
    "test_plan": "--test-plan",
    "hatch_rate": "--hatch-rate",
    "startup_time": "--startup-time",
    "iterations": "--iterations",
}
MAX_THROTTLE = 1_000_000.0


def _shaping(raw: dict[str, Any]) -> dict[str, Any]:
    """--test-plan, --arrival-rate, --throttle-requests, --co-mitigation: their own values and conflicts."""
    out: dict[str, Any] = {"test_plan": None, "throttle": None, "co": "disabled"}
    plan_text = raw.get("test_plan")
    if plan_text is not None:
        for key, option in PLAN_REPLACES.items():
            if raw.get(key) is not None:
                raise InvalidOption(
                    "--test-plan", plan_text, f"The --test-plan option can not be set together with {option}."
                )
        out["test_plan"] = tuple(parse_plan("--test-plan", plan_text))
    arrival = raw.get("arrival_rate")
    if arrival is not None:
        for key, option in ARRIVAL_EXCLUDES.items():
            if raw.get(key) is not None:
                raise InvalidOption(
                    "--arrival-rate", arrival, f"The --arrival-rate option can not be set together with {option}."
                )
        if ("," in str(arrival) or ";" in str(arrival)) and raw.get("run_time") is not None:
            raise InvalidOption(
                "--arrival-rate", arrival,
                "A rate plan sets its own length: the --arrival-rate plan can not be set together with --run-time.",
            )  # fmt: skip
    throttle = raw.get("throttle_requests")
    if throttle is not None:
        value = _float("--throttle-requests", throttle)
        if value > MAX_THROTTLE:
            raise InvalidOption(
                "--throttle-requests", throttle, f"The --throttle-requests option must be at most {MAX_THROTTLE:,.0f}."
            )
        out["throttle"] = value
    co = raw.get("co_mitigation")
    if co is not None:
        mode = str(co).strip().lower()
        if mode not in CO_MODES:
            raise InvalidOption(
                "--co-mitigation", co, f"The --co-mitigation option must be one of: {', '.join(CO_MODES)}."
            )
        out["co"] = mode
    return out
