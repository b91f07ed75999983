"""A run in one process: Goose without a Gaggle."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import IO, Any

from .config import Config
from .eventlogs import EventLogs
from .logs import NOTICE
from .metrics import Metrics
from .output import LiveView, finish
from .recorder import Recorder
from .report.data import RunInfo, build_report, phases_of
from .runner import Runner, RunOptions, launch_plan
from .scenario import LoadTest
from .signals import install_stop_handlers

log = logging.getLogger("goose_redis")


def scenario_users(load_test: LoadTest, user_indexes: list[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for i in user_indexes:
        si = load_test.scenario_for_user(i)
        counts[si] = counts.get(si, 0) + 1
    return counts


async def run_standalone(config: Config, load_test: LoadTest) -> int:
    metrics = Metrics()
    with contextlib.ExitStack() as stack:
        request_log: IO[bytes] | None = None
        if config.request_log:
            # Opened once before the run; writes are buffered, so the loop never waits on disk.
            request_log = stack.enter_context(open(config.request_log, "wb"))  # noqa: ASYNC230
        start_at = time.time()
        events = EventLogs.open(config, load_test, stack)
        recorder = Recorder(metrics, request_log, origin=start_at, events=events)
        plan = launch_plan(load_test, config.users, config.hatch_interval_s)
        options = RunOptions(
            host=config.host,
            timeout_s=config.timeout_s,
            iterations=config.iterations,
            run_time_s=config.run_time_s,
            ramp_end_s=plan[-1].at_s if plan else 0.0,
            reset_metrics=config.reset_metrics,
        )
        runner = Runner(load_test, plan, options, recorder)
        install_stop_handlers(lambda signame: runner.stop(f"{signame} received"))
        view = LiveView(config, options.ramp_end_s)
        users_by_scenario = scenario_users(load_test, [launch.user_index for launch in plan])

        def info(now: float, measured_from: float) -> RunInfo:
            return RunInfo(
                mode="standalone",
                started_at=start_at,
                ended_at=now,
                measured_from=measured_from,
                users=config.users,
                host=config.host,
                hatch_rate=1.0 / config.hatch_interval_s if config.hatch_interval_s else None,
                run_time_s=config.run_time_s,
                iterations=config.iterations,
                metrics_reset=config.reset_metrics and runner.ramp_done_at is not None,
                phases=phases_of(start_at, runner.ramp_done_at, runner.stopping_at, now),
                scenario_users=users_by_scenario,
            )

        measured_from = start_at

        def on_ramp_done() -> None:
            nonlocal measured_from
            if not config.reset_metrics:
                return
            now = time.time()
            ramp = metrics.take_totals()
            if not config.quiet:
                ramp_info = info(now, start_at)
                ramp_info.phases = ramp_info.phases[:1]  # the ramp-up only: the rest has not happened
                view.show_tables(build_report(ramp, load_test, ramp_info), "=== RAMP-UP METRICS ===")
                log.log(NOTICE, "all %d users launched: metrics reset", config.users)
            measured_from = now

        def show(now: float, tables: bool = True) -> None:
            requests, failures = metrics.total_requests()

            def current() -> dict[str, Any]:
                return build_report(metrics, load_test, info(now, measured_from))

            view.tick(
                now,
                users=runner.launched,
                elapsed_s=now - start_at,
                series=metrics.series,
                requests=requests,
                failures=failures,
                report=current if tables else None,
            )

        try:
            await runner.run(start_at, on_ramp_done, show)
            show(runner.ended_at or time.time(), tables=False)  # the final line left on screen; tables follow
        finally:
            view.close()
        ended = runner.ended_at or time.time()
        finish(build_report(metrics, load_test, info(ended, measured_from)), config)
    return 0
