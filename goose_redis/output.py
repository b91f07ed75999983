"""What a run shows and writes at its end (and while it runs): shared by the
standalone run and the Manager, so both print and write the same things."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from .config import Config
from .progress import ProgressLine
from .report.console import render_tables
from .report.writers import write_reports
from .series import Series, recent

log = logging.getLogger("goose_redis")


def print_tables(report: dict[str, Any], heading: str | None = None) -> None:
    out = sys.stdout
    if heading:
        out.write(f"\n{heading}\n")
    out.write(render_tables(report))
    out.write("\n")
    out.flush()


def finish(report: dict[str, Any], config: Config) -> None:
    print_tables(report)
    for path in write_reports(report, list(config.report_files)):
        if not config.quiet:
            sys.stderr.write(f"wrote report {path}\n")


class LiveView:
    """The progress line and ``--running-metrics`` tables, driven by a ticker."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.progress = None if config.quiet else ProgressLine()
        self._next_tables = time.time() + (config.running_metrics_s or 0)

    def tick(
        self,
        now: float,
        *,
        users: int,
        elapsed_s: float,
        series: Series,
        requests: int,
        failures: int,
        workers: int | None = None,
        report: Any = None,
    ) -> None:
        if self.progress is not None:
            rps, p95 = recent(series, now)
            self.progress.update(
                users, self.config.users, elapsed_s, self.config.run_time_s, rps, requests, failures, p95, workers
            )
        if self.config.running_metrics_s and now >= self._next_tables and report is not None:
            self._next_tables = now + self.config.running_metrics_s
            print_tables(report(), f"=== RUNNING METRICS ({elapsed_s:.0f}s) ===")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
