"""The Manager's control desk: it applies control commands and keeps the dashboard's view.

Anyone who reaches Redis may add a command to the ``commands`` stream (``goose-redis
control``, the dashboard); only the Manager applies it, and answers in ``reply:{id}``. A
command steers the shape (``steering``), which the Workers follow within a second; before
the start (``--no-autostart``) it changes the options the gaggle will start with. Each
applied command is logged, kept in the ``events`` list and in the report's ``events``.

The desk also writes the ``snapshot`` key every metrics interval (``snapshot.py``: small,
bounded, with a TTL) and, once the run is over, the final snapshot and the JSON report, so
a dashboard reads Redis alone and may restart, or run several times, at will.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson

from ..commands import Outcome, before_start, event, refused
from ..errors import InvalidOption
from ..logs import NOTICE
from ..shape import Slot
from ..snapshot import RunView, build_snapshot
from . import keys as K
from .auth import ReplayGuard
from .control_auth import read_command
from .protocol import PROTOCOL_VERSION, ControlCommand, ControlReply, ProtocolError

if TYPE_CHECKING:
    from .manager import Manager

log = logging.getLogger("goose_redis.gaggle.manager")

MAX_LOGGED_BAD = 5
RATE_SPAN_S = 4.0  # a Worker's req/s: over at least this much of its merged history
LAG_S = K.METRICS_INTERVAL_S + 1.0  # a second is fully merged once every Worker's next delta is in


class ControlDesk:
    def __init__(self, manager: Manager) -> None:
        self.m = manager
        self.link = manager.link
        self.keys = manager.keys
        self.last_id: bytes | str = b"0-0"
        self.events: list[dict[str, Any]] = []
        self.start_armed = False
        self.bad = 0
        self.next_snapshot = 0.0
        self.history: deque[tuple[float, dict[str, int]]] = deque(maxlen=16)
        self.waiting_logged = False
        self.guard = ReplayGuard()  # command ids seen lately: each command is applied once
        self.refusals_logged: set[str] = set()


    # -- commands ----------------------------------------------------------------------

    async def poll(self) -> None:
        """Apply the commands that came since the last poll (the Manager's loops call this)."""
        resp: Any = await self.link.attempt(
            "reading control commands", lambda: self.link.client.xread({self.keys.commands: self.last_id}, count=20)
        )
        for _stream, entries in resp or []:
            for entry_id, fields in entries:
                self.last_id = entry_id
                await self.handle(fields)

    async def handle(self, fields: dict[bytes, bytes]) -> None:
        try:
            cmd, refusal = read_command(fields.get(b"cmd"), self.m.auth, self.guard, self.link.now())
        except ProtocolError as exc:
            self.bad += 1  # no id we could trust to answer to: logged and skipped
            if self.bad <= MAX_LOGGED_BAD:
                log.warning("ignoring a malformed control command: %s", exc)
            return
        if refusal:
            outcome = refused(refusal)
            kind = refusal.split(":", 1)[0]
            if kind not in self.refusals_logged:  # each kind of refusal once: a flood stays one line
                self.refusals_logged.add(kind)
                log.warning("refused control command %s (by %s): %s (further ones like it not logged)",
                            cmd.command, cmd.by, refusal)  # fmt: skip
        else:
            outcome = await self.decide(cmd)
        reply = ControlReply(cmd.id, outcome.ok, outcome.said, outcome.error, self.link.now())
        await self.link.attempt(
            "answering a control command",
            lambda: self.link.client.set(self.keys.reply(cmd.id), reply.to_bytes(), ex=K.REPLY_TTL_S),
        )
        if outcome.ok:
            self.next_snapshot = 0.0  # dashboards see the change at once

    async def decide(self, cmd: ControlCommand) -> Outcome:
        m = self.m
        shown = f"{cmd.command}{f' {cmd.value}' if cmd.value else ''} (by {cmd.by})"
        age = self.link.now() - cmd.at
        if age > K.COMMAND_MAX_AGE_S:
            log.warning("refused control command %s: sent %.0fs ago", shown, age)
            return refused(f"the command was sent {age:.0f}s ago; its sender has given up on it")
        if m.state in (K.STOPPING, K.DONE) or m.stop_event.is_set():
            return refused(f"the run is already over ({m.stop_reason or m.state})")
        try:
            outcome = await self._apply(cmd)
        except InvalidOption as exc:
            return Outcome(False, str(exc), "invalid")
        if outcome.ok:
            log.log(NOTICE, "control: %s (by %s)", outcome.said, cmd.by)
            await self._record(cmd)
        else:
            log.warning("refused control command %s: %s", shown, outcome.said)
        return outcome

    async def _apply(self, cmd: ControlCommand) -> Outcome:
        m = self.m
        expect = m.config.expect_workers
        if cmd.command == "stop":
            m.request_stop(f"stop command (by {cmd.by})")
            return Outcome(True, "stopping the gaggle")
        if cmd.command == "start":
            if m.started_at is not None:
                return refused("the gaggle already started")
            if m.config.autostart:
                return refused(f"the gaggle starts by itself once its {expect} workers are ready (no --no-autostart)")
            if self.start_armed:
                return refused(f"start was already given: the gaggle starts once its {expect} workers are ready")
            self.start_armed = True
            m.wake.event.set()
            ready = sum(1 for w in m.roster.workers.values() if w.ready)
            if ready == expect:
                return Outcome(True, f"starting the gaggle ({expect} workers ready)")
            return Outcome(True, f"the gaggle starts once its {expect} workers are ready ({ready} now)")
        if m.started_at is not None:
            said = m.steering.apply(cmd.command, cmd.value, cmd.by)
            await self.link.attempt("publishing the shape", m.steering.publish)
            return Outcome(True, said)
        try:
            config, said = before_start(m.config, cmd.command, cmd.value)
        except ValueError as exc:
            return refused(str(exc))
        self._adopt(config, f"{said} (by {cmd.by})")
        return Outcome(True, said)

    def _adopt(self, config: Any, cause: str) -> None:
        """Before the start: the gaggle starts with ``config`` (its shape, its users per Worker)."""
        m = self.m
        shape = config.shape()
        m.config = m.roster.config = config
        m.steering.set_shape(shape, cause)
        m.roster.peak_users = shape.peak
        for w in m.roster.workers.values():
            w.users = Slot.of(w.index - 1, config.expect_workers).count(shape.peak)

    async def _record(self, cmd: ControlCommand) -> None:
        started = self.m.started_at
        e = event(cmd.command, cmd.value, cmd.by, time.time(), self.link.local(started) if started else None)
        self.events.append(e)
        doc = orjson.dumps({"v": PROTOCOL_VERSION, **e})

        async def push() -> None:
            async with self.link.client.pipeline(transaction=False) as p:
                p.rpush(self.keys.events, doc)
                p.ltrim(self.keys.events, -K.MAX_EVENTS, -1)
                p.expire(self.keys.events, K.LONG_TTL_S)
                await p.execute()

        await self.link.attempt("recording a control event", push)

    def waiting_for_start(self) -> bool:
        """``--no-autostart``: every Worker is ready, and no start command came yet."""
        if self.m.config.autostart or self.start_armed:
            return False
        if not self.waiting_logged:
            self.waiting_logged = True
            log.log(NOTICE, "all %d workers ready: waiting for `goose-redis control start` (--no-autostart)",
                    self.m.config.expect_workers)  # fmt: skip
        return True

    # -- the dashboard's view -------------------------------------------------------------

    def view(self, now: float, final_duration_s: float | None = None, report: bool = False) -> RunView:
        m = self.m
        started = m.link.local(m.started_at) if m.started_at is not None else None
        workers = m.roster.by_index()
        counts = {w.id: w.requests for w in workers}
        if final_duration_s is not None:  # the run is over: each Worker's average, as the rows show
            rates = {w.id: w.requests / final_duration_s for w in workers} if final_duration_s > 0 else {}
        else:
            rates = self._rates(now, counts)
        return RunView(
            kind="gaggle",
            name=m.config.gaggle,
            run_id=m.run_id,
            state=m.state,
            now=now,
            started_at=started,
            shape=m.steering.shape,
            users=sum(w.active_users for w in workers if not w.lost and not w.ledger.complete),
            autostart=m.config.autostart,
            start_armed=self.start_armed,
            expect_workers=m.config.expect_workers,
            ready_workers=sum(1 for w in workers if w.ready),
            stop_reason=m.stop_reason,
            events=self.events,
            workers=[
                {"index": w.index, "id": w.id, "host": w.host, "state": _worker_state(w, started is not None),
                 "alive": not w.lost, "users": 0 if w.ledger.complete else w.active_users,
                 "requests": w.requests, "failures": w.failures, "rps": rates.get(w.id, 0.0)}
                for w in workers
            ],  # fmt: skip
            final_duration_s=final_duration_s,
            report=report,
            clock_s=m.link.skew_s,
            lag_s=LAG_S,
        )

    def _rates(self, now: float, counts: dict[str, int]) -> dict[str, float]:
        """Each Worker's merged requests per second over its last few seconds of deltas."""
        self.history.append((now, counts))
        base_t, base = self.history[0]
        for t, seen in self.history:
            if now - t >= RATE_SPAN_S:
                base_t, base = t, seen
        span = now - base_t
        return {wid: (n - base.get(wid, n)) / span for wid, n in counts.items()} if span > 0 else {}

    async def publish_snapshot(self) -> None:
        """The live snapshot, every metrics interval (and at once after a command)."""
        now = time.time()
        if now < self.next_snapshot:
            return
        self.next_snapshot = now + K.METRICS_INTERVAL_S
        reset = self.m.marks(now)[3] if self.m.started_at is not None else False
        doc = build_snapshot(self.view(now), self.m.merger.measured(reset), self.m.merger.metrics.series)
        data = orjson.dumps(doc)
        await self.link.attempt(
            "writing the snapshot", lambda: self.link.client.set(self.keys.snapshot, data, ex=K.SNAPSHOT_TTL_S)
        )

    async def publish_final(self, report: dict[str, Any] | None) -> None:
        """The run is over: the final snapshot and the JSON report stay as long as the run's keys."""
        now = time.time()
        data = orjson.dumps(report) if report is not None else None
        if data is not None and len(data) > K.MAX_REPORT_BYTES:
            log.warning("the report is %d MB: too large to keep in Redis for dashboards", len(data) // 2**20)
            data = None
        duration = float(report["duration_s"]) if report is not None else 0.0
        reset = bool(report and report.get("metrics_reset"))
        view = self.view(now, final_duration_s=duration, report=data is not None)
        doc = build_snapshot(view, self.m.merger.measured(reset), self.m.merger.metrics.series)

        async def write() -> None:
            async with self.link.client.pipeline(transaction=False) as p:
                if data is not None:
                    p.set(self.keys.report, data, ex=K.LONG_TTL_S)
                p.set(self.keys.snapshot, orjson.dumps(doc), ex=K.LONG_TTL_S)
                await p.execute()

        await self.link.attempt("keeping the final report for dashboards", write)


def _worker_state(w: Any, started: bool) -> str:
    if w.lost:
        return "lost"
    if w.ledger.complete:
        return "done"
    if not started:
        return "ready" if w.ready else "connected"
    return "running"
