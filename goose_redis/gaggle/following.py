"""How a Worker follows the shape the Manager publishes: read it (verified, for our run,
never an older epoch), find our slot in it, build the engine on it at the start, and hand
each newer epoch to the running engine. Mixed into ``Worker`` (worker.py)."""

from __future__ import annotations

import contextlib
import logging
from typing import IO, Any

from ..eventlogs import EventLogs
from ..logs import NOTICE
from ..metrics import Metrics
from ..procgroup import ProcessGroup
from ..recorder import Recorder
from ..runner import Runner, RunOptions
from ..scenario import LoadTest
from ..shape import IDLE, Slot
from .auth import REPLAYED
from .presence import Presence
from .protocol import ProtocolError, ShapeMessage, Unauthenticated

log = logging.getLogger("goose_redis.gaggle.worker")


class Following(Presence):
    """Mixed into ``Worker``, which sets these attributes (and Presence's)."""

    load_test: LoadTest
    metrics: Metrics
    shape_epoch: int
    shape_cause: str
    request_log: IO[bytes] | None
    event_logs: contextlib.ExitStack

    async def _read_shape(self) -> ShapeMessage | None:
        raw = await self.link.attempt("reading the shape", lambda: self.link.client.get(self.keys.shape))
        if raw is None:
            return None
        try:
            msg = ShapeMessage.from_bytes(raw, self.auth)
        except Unauthenticated:
            return None
        except ProtocolError as exc:
            self._warn_once("shape", "ignoring a malformed shape: %s", exc)
            return None
        assert self.assignment is not None
        if msg.run_id != self.assignment.run_id:
            return None
        if msg.epoch < self.shape_epoch and self.auth.enabled:  # signed, but passed: an old shape replayed
            self.auth.refuse("ShapeMessage", REPLAYED, f"epoch {msg.epoch}, and this worker follows epoch "
                             f"{self.shape_epoch}", raw)  # fmt: skip
            return None
        return msg

    def _slot_of(self, msg: ShapeMessage) -> Slot:
        try:
            return Slot.of(msg.workers.index(self.id), len(msg.workers))
        except ValueError:
            return IDLE  # the Manager gave our users to others (it thought us lost): run none

    def _make_runner(self, msg: ShapeMessage) -> None:
        a = self.assignment
        assert a is not None
        options = RunOptions(host=a.host, timeout_s=a.timeout_s, iterations=a.iterations, source=self.id,
                             own_end=False, co_mitigation=a.co_mitigation)  # fmt: skip
        if self.config.processes > 1:  # one Worker, N engines on sub-slots of its slot (procgroup.py)
            self.runner = ProcessGroup(self.config, self.load_test, options, self.metrics, msg.shape(),
                                       self._slot_of(msg))  # fmt: skip
            self.shape_epoch = msg.epoch
            return
        if self.config.request_log:  # each Worker keeps its own request log, on its own host
            self.request_log = open(self.config.request_log, "wb")  # noqa: SIM115 - closed in run()
        events = EventLogs.open(self.config, self.load_test, self.event_logs)  # local to this Worker too
        recorder = Recorder(self.metrics, self.request_log, events=events)
        self.runner = Runner(self.load_test, options, recorder, msg.shape(),
                             self._slot_of(msg))  # fmt: skip
        self.shape_epoch = msg.epoch
        if msg.cause:  # a control command before the start changed what starts
            self.shape_cause = msg.cause
            log.log(NOTICE, "starting as steered before the start: %s", msg.cause)

    def _shape_unchanged(self, run: dict[Any, Any] | None) -> bool:
        """The run hash names the shape's epoch. The shape lists every Worker, so reading it
        on every poll would cost Redis workers x workers bytes a second: read it when it changed."""
        try:
            return run is not None and int(run[b"epoch"]) <= self.shape_epoch
        except (KeyError, ValueError):
            return False  # a Manager that does not write it: read the shape as before

    async def _follow_shape(self, run: dict[Any, Any] | None) -> None:
        if self._shape_unchanged(run):
            return
        msg = await self._read_shape()
        if msg is None or msg.epoch <= self.shape_epoch or self.runner is None:
            return
        self.shape_epoch = msg.epoch
        slot = self._slot_of(msg)
        shape = msg.shape()
        self.runner.set_shape(shape, slot)
        total = shape.users_at(self.runner.elapsed())
        if msg.cause and msg.cause != self.shape_cause:  # a control command: every Worker says so
            self.shape_cause = msg.cause
            i = shape.active(self.runner.elapsed())
            target = shape.segments[i].end if i is not None else total  # where the change is heading
            log.log(NOTICE, "%s: %d of %d users are ours", msg.cause, slot.count(target), target)
        else:
            log.info("the shape changed (epoch %d): %d of %d users are ours now", msg.epoch, slot.count(total), total)

