"""A run in one process: Goose without a Gaggle."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import IO, TYPE_CHECKING, Any

from .config import Config
from .errors import LoadTestError
from .eventlogs import EventLogs
from .logs import NOTICE
from .metrics import Metrics
from .output import LiveView, finish
from .procgroup import Engine, ProcessGroup
from .recorder import Recorder
from .report.data import RunInfo, build_report, phases_of
from .runner import Runner, RunOptions
from .scenario import LoadTest
from .shape import Shape, history
from .signals import install_stop_handlers
from .thresholds import watch_for

if TYPE_CHECKING:
    from .dashboard.local import LocalControl

log = logging.getLogger("goose_redis")


def scenario_users(load_test: LoadTest, users: int) -> dict[int, int]:
    """Users per scenario when ``users`` run (user ``i`` runs ``scenario_for_user(i)``)."""
    counts: dict[int, int] = {}
    for i in range(users):
        si = load_test.scenario_for_user(i)
        counts[si] = counts.get(si, 0) + 1
    return counts


def shaping_info(config: Config, shape: Shape, until_s: float) -> dict[str, Any]:
    """The RunInfo fields that describe the load's shape (shared with the Manager)."""
    return {
        "test_plan": config.test_plan_text,
        "plan": history(shape, until_s),
        "throttle_requests": shape.throttle,
        "arrival_rate": config.arrival.text if config.arrival is not None else None,
        "co_mitigation": config.co_mitigation,
    }


def hatch_rate_of(config: Config) -> float | None:
    if config.test_plan is not None or config.arrival is not None:
        return None
    return 1.0 / config.hatch_interval_s if config.hatch_interval_s else None


async def _engine(config: Config, load_test: LoadTest, metrics: Metrics, shape: Shape,
                  stack: contextlib.ExitStack) -> tuple[Engine, float]:  # fmt: skip
    """The engine that runs the users, and the run's start instant."""
    options = RunOptions(
        host=config.host,
        timeout_s=config.timeout_s,
        iterations=config.iterations,
        co_mitigation=config.co_mitigation,
    )
    if config.processes > 1:  # children run the users and write the logs (procgroup.py)
        group = ProcessGroup(config, load_test, options, metrics, shape)
        install_stop_handlers(lambda signame: group.stop(f"{signame} received"))
        await group.spawn()  # the clock starts once every child has loaded the load test
        return group, time.time()
    request_log: IO[bytes] | None = None
    if config.request_log:
        # Opened once before the run; writes are buffered, so the loop never waits on disk.
        request_log = stack.enter_context(open(config.request_log, "wb"))  # noqa: ASYNC230
    start_at = time.time()
    events = EventLogs.open(config, load_test, stack)
    recorder = Recorder(metrics, request_log, origin=start_at, events=events)
    runner = Runner(load_test, options, recorder, shape)
    install_stop_handlers(lambda signame: runner.stop(f"{signame} received"))
    return runner, start_at


async def run_standalone(config: Config, load_test: LoadTest) -> int:
    if config.controller_port is None:
        return await _run(config, load_test, None)
    from .dashboard.local import LocalControl  # --controller-port: the page and its API, in-process

    control = LocalControl(config)
    try:
        await control.serve()
    except OSError as exc:
        raise LoadTestError(
            f"cannot serve the dashboard on {config.controller_bind}:{config.controller_port}: {exc.strerror or exc}"
        ) from None
    try:
        started = await control.wait_for_start()
        if started is None:
            log.log(NOTICE, "the run never started: %s", control.stopped_before_start)
            return 0
        code = await _run(started, load_test, control)
        await control.linger()
        return code
    finally:
        await control.close()


async def _run(config: Config, load_test: LoadTest, control: LocalControl | None) -> int:
    metrics = Metrics()
    shape = config.shape()
    with contextlib.ExitStack() as stack:
        runner, start_at = await _engine(config, load_test, metrics, shape, stack)
        if control is not None:
            control.attach(runner, metrics, start_at)
        view = LiveView(config, shape.end_s)
        users_by_scenario = scenario_users(load_test, shape.peak)

        def info(now: float, measured_from: float) -> RunInfo:
            return RunInfo(
                mode="standalone",
                started_at=start_at,
                ended_at=now,
                measured_from=measured_from,
                users=shape.peak,
                host=config.host,
                hatch_rate=hatch_rate_of(config),
                run_time_s=config.run_time_s,
                iterations=config.iterations,
                metrics_reset=measured_from > start_at,
                phases=phases_of(start_at, runner.ramp_done_at, runner.stopping_at, now),
                scenario_users=users_by_scenario,
                events=list(control.events) if control is not None else [],
                problems=list(runner.problems) if isinstance(runner, ProcessGroup) else [],
                **shaping_info(config, runner.shape, now - start_at),
            )

        measured_from = start_at
        watch = watch_for(config)

        def on_reset() -> None:
            nonlocal measured_from
            now = time.time()
            ramp = metrics.take_totals()
            if not config.quiet:
                ramp_info = info(now, start_at)
                ramp_info.phases = ramp_info.phases[:1]  # the ramp-up only: the rest has not happened
                ramp_info.metrics_reset = False
                view.show_tables(build_report(ramp, load_test, ramp_info), "=== RAMP-UP METRICS ===")
            log.log(NOTICE, "all %d users launched: metrics reset", runner.active)
            measured_from = now

        def show(now: float, tables: bool = True) -> None:
            requests, failures = metrics.total_requests()

            def current() -> dict[str, Any]:
                return build_report(metrics, load_test, info(now, measured_from))

            if watch is not None and not runner.stop_event.is_set() and (reason := watch.poll(now, current)):
                log.log(NOTICE, "aborting the run: %s", reason)
                runner.stop(reason)

            view.planned_s = runner.shape.end_s  # a command may have moved the end
            view.tick(
                now,
                users=runner.active,
                elapsed_s=now - start_at,
                series=metrics.series,
                requests=requests,
                failures=failures,
                report=current if tables else None,
            )

        try:
            await runner.run(start_at, on_reset, show)
            show(runner.ended_at or time.time(), tables=False)  # the final line left on screen; tables follow
        finally:
            view.close()
        ended = runner.ended_at or time.time()
        report = build_report(metrics, load_test, info(ended, measured_from))
        code = finish(report, config, aborted=watch.fired if watch else None)
        if control is not None:
            control.finish(report)
    return code
