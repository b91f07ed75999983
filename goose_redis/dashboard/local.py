"""A standalone run's dashboard (``--controller-port``): the gaggle's page and commands, in-process.

The page and its API are the gaggle dashboard's (``server.py``); here the source is the run
itself: the snapshot is built from its own metrics on each request, and a command steers its
runner with the same rules a Manager applies (``steering.steer``, ``commands.before_start``).
It listens on 127.0.0.1 unless ``--controller-bind`` says otherwise: whoever reaches the port
can steer the run, so exposing it is the user's decision. When the run ends, a page that is
open gets a few seconds to fetch the final tables and the report before the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import orjson
from aiohttp import web

from ..commands import Outcome, before_start, event, refused
from ..config import Config
from ..errors import InvalidOption
from ..gaggle.steering import steer
from ..logs import NOTICE
from ..metrics import Metrics
from ..procgroup import Engine
from ..signals import install_stop_handlers
from ..snapshot import RunView, build_snapshot
from .server import make_app, serve

log = logging.getLogger("goose_redis")

LINGER_S = 10.0  # at most, once the run is over, for an open page to fetch the final view
RECENT_PAGE_S = 5.0  # a page that polled this recently is open


class LocalControl:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.by = f"dashboard on {socket.gethostname()}"
        self.runner: Engine | None = None
        self.metrics = Metrics()
        self.start_at: float | None = None
        self.state = "waiting"
        self.go = asyncio.Event()
        self.stopped_before_start: str | None = None
        self.events: list[dict[str, Any]] = []
        self.final: bytes | None = None
        self.final_duration_s: float | None = None
        self.last_poll = 0.0  # monotonic time of the page's last request
        self.final_seen = asyncio.Event()
        self._app_runner: web.AppRunner | None = None
        self.url = ""

    async def serve(self) -> None:
        bind = self.config.controller_bind
        port = self.config.controller_port or 0
        self._app_runner, self.url = await serve(make_app(self, bind), bind, port)
        log.log(NOTICE, "dashboard and control API at %s", self.url)

    async def wait_for_start(self) -> Config | None:
        """The options to start with (changed by commands before the start), or None when stopped first."""
        if self.config.autostart:
            self.go.set()
            return self.config
        install_stop_handlers(self._stop_waiting)
        log.log(NOTICE, "waiting for Start on %s, or a POST of {\"command\": \"start\"} to %sapi/command "
                "(--no-autostart)", self.url, self.url)  # fmt: skip
        await self.go.wait()
        return None if self.stopped_before_start else self.config

    def _stop_waiting(self, signame: str) -> None:
        self.stopped_before_start = f"{signame} received"
        self.go.set()

    def attach(self, runner: Engine, metrics: Metrics, start_at: float) -> None:
        self.runner, self.metrics, self.start_at = runner, metrics, start_at
        self.state = "running"

    def finish(self, report: dict[str, Any]) -> None:
        self.state = "done"
        self.final_duration_s = float(report["duration_s"])
        self.final = orjson.dumps(report)

    async def linger(self) -> None:
        """An open page gets the final view before the process exits (bounded)."""
        if time.monotonic() - self.last_poll > RECENT_PAGE_S:
            return
        try:
            await asyncio.wait_for(self.final_seen.wait(), LINGER_S)
        except TimeoutError:
            pass

    async def close(self) -> None:
        if self._app_runner is not None:
            await self._app_runner.cleanup()

    # -- the dashboard's source ----------------------------------------------------------

    def _state(self) -> str:
        if self.state == "running" and self.runner is not None and self.runner.stop_event.is_set():
            return "stopping"
        return self.state

    async def view(self) -> dict[str, Any]:
        self.last_poll = time.monotonic()
        runner = self.runner
        state = self._state()
        run = RunView(
            kind="standalone",
            name="standalone",
            run_id="",
            state=state,
            now=time.time(),
            started_at=self.start_at,
            shape=runner.shape if runner is not None else self.config.shape(),
            users=runner.active if runner is not None else 0,
            autostart=self.config.autostart,
            start_armed=self.go.is_set(),
            stop_reason=runner.stop_reason if runner is not None else "",
            events=self.events,
            final_duration_s=self.final_duration_s,
            report=self.final is not None,
        )
        snapshot = build_snapshot(run, self.metrics, self.metrics.series)
        return {"gaggle": None, "redis": None, "manager_alive": state != "done", "run": {"state": state},
                "report": self.final is not None, "snapshot": snapshot, "problem": None, "now": run.now}  # fmt: skip

    async def report(self) -> bytes | None:
        if self.final is not None:
            self.final_seen.set()
        return self.final

    async def command(self, command: str, value: str | None) -> Outcome:
        state = self._state()
        if state in ("stopping", "done") or self.stopped_before_start:
            reason = self.runner.stop_reason if self.runner is not None else self.stopped_before_start
            return refused(f"the run is already over ({reason or state})")
        try:
            outcome = self._apply(command, value)
        except InvalidOption as exc:
            return Outcome(False, str(exc), "invalid")
        if outcome.ok:
            log.log(NOTICE, "control: %s (by %s)", outcome.said, self.by)
            self.events.append(event(command, value, self.by, time.time(), self.start_at))
        return outcome

    def _apply(self, command: str, value: str | None) -> Outcome:
        runner = self.runner
        if command == "stop":
            if runner is None:
                self.stopped_before_start = f"stop command (by {self.by})"
                self.go.set()
            else:
                runner.stop(f"stop command (by {self.by})")
            return Outcome(True, "stopping the run")
        if command == "start":
            if self.go.is_set():
                return refused("the run already started")
            self.go.set()
            return Outcome(True, "starting the run")
        if runner is None:
            try:
                self.config, said = before_start(self.config, command, value)
            except ValueError as exc:
                return refused(str(exc))
            return Outcome(True, said)
        shape, said = steer(runner.shape, runner.elapsed(), command, value)
        runner.set_shape(shape)
        return Outcome(True, said)
