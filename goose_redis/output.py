"""What a run shows and writes at its end (and while it runs): shared by the
standalone run and the Manager, so both print and write the same things."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from .config import Config
from .progress import ProgressLine, format_progress
from .report.console import render_tables
from .report.writers import write_reports
from .series import Series, recent
from .verdict import apply_verdict

log = logging.getLogger("goose_redis")


def print_tables(report: dict[str, Any], heading: str | None = None, running: bool = False) -> None:
    out = sys.stdout
    if heading:
        out.write(f"\n{heading}\n")
    out.write(render_tables(report, running))
    out.write("\n")
    out.flush()


def finish(report: dict[str, Any], config: Config, aborted: str | None = None) -> int:
    """Judge the final report (thresholds, integrity), print it, write it; returns the exit code.

    ``aborted``: the reason ``--threshold-abort`` stopped the run, if it did.
    """
    code = apply_verdict(report, config.thresholds, aborted)
    print_tables(report)
    for path in write_reports(report, list(config.report_files)):
        if not config.quiet:
            sys.stderr.write(f"wrote report {path}\n")
    return code


class _ClearLineFirst(logging.Filter):
    """Erases the in-place progress line before a log record is written, so the record
    starts on a clean line instead of after the progress text (the next tick redraws it)."""

    def __init__(self, line: ProgressLine) -> None:
        super().__init__()
        self.line = line

    def filter(self, record: logging.LogRecord) -> bool:
        self.line.clear()
        return True


class LiveView:
    """The progress line and ``--running-metrics`` tables, driven by a ticker."""

    def __init__(self, config: Config, planned_s: float | None = None) -> None:
        self.config = config
        self.progress = None if config.quiet else ProgressLine()
        # The whole planned run (ramp-up plus run time, or the test plan), when it has an end.
        self.planned_s = planned_s
        self._next_tables = time.time() + (config.running_metrics_s or 0)
        self._log_filter: _ClearLineFirst | None = None
        if self.progress is not None and self.progress.tty:
            self._log_filter = _ClearLineFirst(self.progress)
            for handler in logging.getLogger().handlers:
                handler.addFilter(self._log_filter)

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
                format_progress(
                    users, self.config.users, elapsed_s, self.planned_s, rps, requests, failures, p95, workers
                )
            )
        if self.config.running_metrics_s and now >= self._next_tables and report is not None:
            self._next_tables = now + self.config.running_metrics_s
            self.show_tables(report(), f"=== RUNNING METRICS ({elapsed_s:.0f}s) ===", running=True)

    def show_tables(self, report: dict[str, Any], heading: str, running: bool = False) -> None:
        """Tables while the run goes on: the in-place line is erased first, the next tick redraws it.
        ``running``: a snapshot of the run so far (the overview says "Now", not "Ended")."""
        if self.progress is not None:
            self.progress.clear()
        print_tables(report, heading, running)

    def close(self) -> None:
        if self._log_filter is not None:
            for handler in logging.getLogger().handlers:
                handler.removeFilter(self._log_filter)
            self._log_filter = None
        if self.progress is not None:
            self.progress.close()
