"""Where users' measurements land: metrics rows, the time series and the request log.

Kept apart from ``User`` so the hot path is one small, cheap place to read
and to benchmark.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING

import orjson

from .metrics import Metrics

if TYPE_CHECKING:
    from .eventlogs import EventLogs
    from .user import Response, User


class Recorder:
    def __init__(self, metrics: Metrics, request_log: IO[bytes] | None = None, origin: float = 0.0,
                 events: EventLogs | None = None) -> None:  # fmt: skip
        self.metrics = metrics
        self.request_log = request_log
        self.origin = origin  # epoch of the run start; request-log "elapsed" counts from here
        self.events = events  # --transaction-log, --scenario-log, --error-log (None: no cost)

    def request(self, resp: Response, user: User) -> None:
        m = self.metrics
        m.request_row(resp.method, resp.name).record(
            resp.elapsed_ms, resp.success, resp.status or None, resp.error, len(resp.body)
        )
        m.series.record(resp.started, f"{resp.method} {resp.name}", resp.elapsed_ms, resp.success)
        if self.events is not None and not resp.success:
            self.events.request_failed(resp, user, self.origin)
        if self.request_log is not None:
            self.request_log.write(
                orjson.dumps(
                    {
                        "elapsed": round(resp.started - self.origin, 6),
                        "started_at": resp.started,
                        "method": resp.method,
                        "name": resp.name,
                        "url": resp.url,
                        "status": resp.status,
                        "response_time_ms": resp.elapsed_ms,
                        "success": resp.success,
                        "error": resp.error,
                        "user": user.index,
                        "scenario": user.scenario.name,
                        "transaction": user.transaction_name,
                    }
                )
                + b"\n"
            )

    def transaction(self, scenario_index: int, transaction_index: int, ms: float, success: bool,
                    error: str | None, user: User | None = None) -> None:  # fmt: skip
        self.metrics.transaction_row(scenario_index, transaction_index).record(ms, success, None, error)
        if self.events is not None:
            self.events.transaction(user, scenario_index, transaction_index, ms, success, error, self.origin)

    def scenario(self, scenario_index: int, ms: float, success: bool, user: User | None = None) -> None:
        self.metrics.scenario_row(scenario_index).record(ms, success, None, None)
        if self.events is not None:
            self.events.scenario(user, scenario_index, ms, success, self.origin)

    def backfill(self, resp: Response, samples: list[float]) -> None:
        """Coordinated-omission mitigation: what a steady client would also have measured."""
        row = self.metrics.co_request_row(resp.method, resp.name)
        for ms in samples:
            row.record(ms, resp.success, resp.status or None, resp.error)

    def dropped(self) -> None:
        """An open-model iteration was due and no user was free."""
        self.metrics.dropped_iterations += 1
