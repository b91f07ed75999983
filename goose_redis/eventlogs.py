"""Goose's other logs: ``--transaction-log``, ``--scenario-log`` and ``--error-log``, one JSON line per event.

They are written by the process that runs the users (standalone, or each Worker on its own
host, like ``--request-log``), through a buffered file opened before the run, so the event
loop never waits on the disk. The line of each log is documented in docs/reports.md.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import IO, TYPE_CHECKING, Any

import orjson

from .scenario import LoadTest

if TYPE_CHECKING:
    from .config import Config
    from .user import Response, User

# (option, Config attribute) of every per-event log, the request log included.
class EventLogs:
    """The open logs of one run; the recorder calls it only when at least one log is asked for."""

    def __init__(self, load_test: LoadTest, transaction: IO[bytes] | None = None,
                 scenario: IO[bytes] | None = None, error: IO[bytes] | None = None) -> None:  # fmt: skip
        self.load_test = load_test
        self.transaction_log = transaction
        self.scenario_log = scenario
        self.error_log = error

    @classmethod
    def open(cls, config: Config, load_test: LoadTest, stack: ExitStack) -> EventLogs | None:
        """The logs ``config`` asks for, closed with ``stack``; None when it asks for none."""
        files: dict[str, IO[bytes]] = {}
        for key, attr in (("transaction", "transaction_log"), ("scenario", "scenario_log"), ("error", "error_log")):
            path = getattr(config, attr, None)
            if path:
                files[key] = stack.enter_context(open(path, "wb"))  # noqa: SIM115 - closed by the stack
        return cls(load_test, **files) if files else None

    def _names(self, scenario_index: int, transaction_index: int | None = None) -> tuple[str, str]:
        scenarios = self.load_test.scenarios
        if scenario_index >= len(scenarios):
            return f"scenario {scenario_index + 1}", ""
        scenario = scenarios[scenario_index]
        if transaction_index is None or transaction_index >= len(scenario.transactions):
            return scenario.name, ""
        return scenario.name, scenario.transactions[transaction_index].display_name

    @staticmethod
    def _write(log: IO[bytes], entry: dict[str, Any]) -> None:
        log.write(orjson.dumps(entry) + b"\n")

    # ``origin`` is the recorder's: the run start (epoch) that "elapsed" counts from, as in the request log.

    def request_failed(self, resp: Response, user: User, origin: float) -> None:
        if self.error_log is None:
            return
        self._write(self.error_log, {
            "elapsed": round(resp.started - origin, 6),
            "kind": "request",
            "user": user.index,
            "scenario": user.scenario.name,
            "transaction": user.transaction_name,
            "method": resp.method,
            "name": resp.name,
            "url": resp.url,
            "status": resp.status,
            "response_time_ms": resp.elapsed_ms,
            "error": resp.error,
        })  # fmt: skip

    def transaction(self, user: User | None, scenario_index: int, transaction_index: int, ms: float, success: bool,
                    error: str | None, origin: float) -> None:  # fmt: skip
        if self.transaction_log is None and (error is None or self.error_log is None):
            return
        scenario, name = self._names(scenario_index, transaction_index)
        entry = {
            "elapsed": round(time.time() - ms / 1000.0 - origin, 6),  # when the transaction started
            "user": None if user is None else user.index,
            "scenario": scenario,
            "scenario_index": scenario_index,
            "transaction": name,
            "transaction_index": transaction_index,
            "run_time_ms": ms,
            "success": success,
            "error": error,
        }
        if self.transaction_log is not None:
            self._write(self.transaction_log, entry)
        if error is not None and self.error_log is not None:  # only an exception sets a transaction's error
            self._write(self.error_log, {
                "elapsed": entry["elapsed"], "kind": "exception", "user": entry["user"], "scenario": scenario,
                "transaction": name, "run_time_ms": ms, "error": error,
            })  # fmt: skip

    def scenario(self, user: User | None, scenario_index: int, ms: float, success: bool, origin: float) -> None:
        if self.scenario_log is None:
            return
        self._write(self.scenario_log, {
            "elapsed": round(time.time() - ms / 1000.0 - origin, 6),  # when the iteration started
            "user": None if user is None else user.index,
            "scenario": self._names(scenario_index)[0],
            "scenario_index": scenario_index,
            "run_time_ms": ms,
            "success": success,
        })  # fmt: skip
