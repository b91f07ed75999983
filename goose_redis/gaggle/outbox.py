"""A Worker's metric deltas on their way to the Manager: at least once, in order.

A delta is cut from the live metrics (cheap, no I/O), kept until the Manager
acknowledges a watermark covering it, and sent again when no acknowledgement came
for a while (a restarted Redis loses unread stream entries; a restarted Manager
reads everything again). The Manager's ledger merges each (worker, seq) once.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

from ..metrics import Metrics
from . import keys as K
from .auth import Auth
from .link import RedisLink, shift_series
from .protocol import MetricsEntry, ProtocolError, Unauthenticated, read_ack

log = logging.getLogger("goose_redis.gaggle.worker")

# Re-send unacknowledged deltas when the Manager has not acknowledged them for
# this long (for example Redis restarted and lost the stream).
RESEND_AFTER_S = 5.0


def sketches_due(metrics: Metrics, interval: int) -> bool:
    """Send the rows' sketches with the ``interval``-th delta? Always while they are small (live
    percentiles stay fresh at low rates), else every SKETCH_EVERY intervals (at high rates they
    are the bulk of a delta: Redis bytes per Worker stay flat)."""
    return interval % K.SKETCH_EVERY == 0 or metrics.sketch_bins() <= K.SKETCH_BINS_EVERY_DELTA


@dataclass
class Pending:
    seq: int
    fields: dict[Any, Any]
    sent_at: float = 0.0  # monotonic; 0 = not sent yet


class Outbox:
    def __init__(self, link: RedisLink, keys: K.Keys, worker_id: str, metrics: Metrics,
                 auth: Auth | None = None) -> None:  # fmt: skip
        self.link = link
        self.auth = auth  # with a secret: entries signed, acknowledgements verified
        self.run_id: str | None = None
        self.keys = keys
        self.worker_id = worker_id
        self.metrics = metrics
        self.pending: list[Pending] = []
        self.seq = 0
        self.acked = 0
        self.sent_requests = 0
        self.sent_failures = 0

    def totals(self) -> tuple[int, int]:
        """Requests and failures so far, sent or not."""
        live_requests, live_failures = self.metrics.total_requests()
        return self.sent_requests + live_requests, self.sent_failures + live_failures

    def cut(self, run_id: str, phase: str, final: bool = False, sketches: bool = True) -> None:
        """Cut a delta now (cheap, no I/O); ``send`` delivers it. ``sketches=False`` keeps the
        rows' sketches for a later delta (the counts go now); a final delta takes them all."""
        delta = self.metrics.take(sketches=sketches or final)
        if delta.is_empty() and not final:
            return
        self.run_id = run_id
        n, f = delta.total_requests()
        delta.series = shift_series(delta.series, self.link.skew_s)  # our clock -> the gaggle's
        self.sent_requests += n
        self.sent_failures += f
        self.seq += 1
        entry = MetricsEntry(run_id, self.worker_id, self.seq, phase, final, self.sent_requests,
                             self.sent_failures, delta)  # fmt: skip
        self.pending.append(Pending(self.seq, entry.to_fields(self.auth)))

    def on_ack(self, raw: object) -> None:
        if raw is None or self.run_id is None:
            return  # nothing sent yet: nothing to acknowledge
        try:
            acked = read_ack(self.auth, self.run_id, self.worker_id, raw)
        except Unauthenticated:
            return  # counted, the first logged: a forged ack must not drop unsent deltas
        except ProtocolError:
            log.warning("ignoring a malformed acknowledgement %r", raw)
            return
        if acked > self.acked:
            self.acked = acked
            self.pending = [p for p in self.pending if p.seq > acked]

    async def send(self) -> None:
        now = time.monotonic()
        if self.pending and self.pending[0].sent_at and now - self.pending[0].sent_at > RESEND_AFTER_S:
            log.info("metrics up to seq %d not acknowledged; re-sending %d deltas", self.acked, len(self.pending))
            for p in self.pending:
                p.sent_at = 0.0
        for p in self.pending:
            if p.sent_at:
                continue
            if await self.link.attempt("sending metrics", functools.partial(self._add, p.fields)) is None:
                return  # keep it; the next round retries
            p.sent_at = time.monotonic()

    async def _add(self, fields: dict[Any, Any]) -> list[Any]:
        async with self.link.client.pipeline(transaction=False) as pipe:
            pipe.xadd(self.keys.metrics, fields, maxlen=K.STREAM_MAXLEN, approximate=True)
            pipe.expire(self.keys.metrics, K.LONG_TTL_S)  # a stream this creates never outlives the run
            return list(await pipe.execute())
