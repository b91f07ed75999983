"""The Manager's merge: read the metrics stream, merge each (worker, seq) once.

Workers send deltas at least once (re-sent until acknowledged); the ledger makes the
merge exactly-once. A delta sent before the metrics reset lands in ``ramp``, the rest
in ``metrics``; every delta's series lands in the charts. One bad entry is counted and
skipped, never the end of intake. Acknowledging (and trimming the stream) is the
checkpoint's job (``checkpoint.py``): only what a checkpoint covers is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..metrics import Metrics
from . import keys as K
from .link import RedisLink, is_wrong_type, shift_series
from .protocol import MetricsEntry, ProtocolError, Unauthenticated
from .roster import Roster

log = logging.getLogger("goose_redis.gaggle.manager")

MAX_LOGGED_BAD = 5
MAX_SKEW_S = 3600.0


class Merger:
    def __init__(self, link: RedisLink, roster: Roster, run_id: str, started_at: Callable[[], float | None]) -> None:
        self.link = link
        self.roster = roster
        self.keys = roster.keys
        self.run_id = run_id
        self.auth = roster.auth  # with a secret: only signed entries merge, acks are signed
        self.started_at = started_at  # the gaggle clock's start, once there is one
        self.metrics = Metrics()
        self.ramp = Metrics()
        self.bad_entries = 0
        self.last_id: bytes | str = b"0-0"
        self.seen_outages = link.outages
        self.handled = 0  # entries of known Workers read (duplicates too): the acks may need writing again
        self.repaired = False

    async def read_loop(self) -> None:
        while True:
            if self.link.outages != self.seen_outages:
                self.seen_outages = self.link.outages
                self.last_id = b"0-0"  # Redis may have restarted: read it all again, the ledger dedups
            resp: Any = await self.link.attempt("reading metrics", self._read)
            if not resp:
                if not self.link.up or resp is None:
                    await asyncio.sleep(0.5)  # Redis away, or it refused the read: no busy loop
                continue
            for _stream, entries in resp:
                for entry_id, fields in entries:
                    self.last_id = entry_id
                    if self.handle_entry(fields) is not None:
                        self.handled += 1

    async def _read(self) -> Any:
        try:
            return await self.link.client.xread({self.keys.metrics: self.last_id}, count=200, block=K.XREAD_BLOCK_MS)
        except Exception as exc:
            if not is_wrong_type(exc):
                raise
        # The stream key holds a string, a hash...: no Worker can add to it. It holds no
        # delta, so delete it; the Workers send again whatever was not acknowledged.
        if not self.repaired:
            self.repaired = True
            log.warning("the metrics stream held another kind of value: deleted it; the workers send again")
        await self.link.client.delete(self.keys.metrics)
        return None

    def handle_entry(self, fields: dict[bytes, bytes]) -> str | None:
        """Merge one stream entry; never raises, so one bad entry cannot stop intake."""
        try:
            entry = MetricsEntry.from_fields(fields, self.auth)
        except Unauthenticated:
            return None  # counted, and the first of its kind logged: never merged
        except ProtocolError as exc:
            self.bad_entries += 1
            if self.bad_entries <= MAX_LOGGED_BAD:
                log.warning("ignoring a malformed metrics entry: %s", exc)
            return None
        except Exception:
            self.bad_entries += 1
            log.exception("ignoring a metrics entry that could not be read")
            return None
        if entry.run_id != self.run_id:
            return None  # an earlier run's leftovers
        w = self.roster.workers.get(entry.worker_id)
        if w is None:
            self.bad_entries += 1
            log.warning("ignoring metrics from unknown worker %r", entry.worker_id)
            return None
        w.silence.reset()  # a delta is news from the Worker too
        entry.metrics.series = shift_series(entry.metrics.series, -self.link.skew_s)  # gaggle -> our clock
        if not self.plausible_times(entry.metrics.series.buckets):
            self.bad_entries += 1
            log.warning("ignoring metrics from worker %d: series times far from this run", w.index)
            return None
        if w.ledger.accept(entry.seq):
            target = self.ramp if entry.phase == "ramp" else self.metrics
            target.merge(entry.metrics, with_series=False)
            if entry.phase == "ramp":
                entry.metrics.series.discard_all()  # charted, but not in the rows after the reset
            self.metrics.series.merge(entry.metrics.series, source=w.id)
            n, f = entry.metrics.total_requests()
            w.requests += n
            w.failures += f
            if entry.phase == "ramp":
                w.ramp = (w.ramp[0] + n, w.ramp[1] + f)
            w.reported = (entry.requests, entry.failures)
        if entry.final and w.ledger.final_seq is None:
            w.ledger.final_seq = entry.seq
            log.info("worker %d sent its final metrics (%d requests)", w.index, entry.requests)
        return w.id

    def plausible_times(self, bucket_keys: Iterable[int]) -> bool:
        """Series buckets within an hour of this run: a far-off key would make the
        report fill the gap between it and the run with empty points."""
        now = time.time()
        started = self.started_at()
        lo = (self.link.local(started) if started else now) - MAX_SKEW_S
        return all(lo <= key <= now + MAX_SKEW_S for key in bucket_keys)

    def totals(self, reset: bool) -> tuple[int, int]:
        """Requests and failures as the report will count them."""
        req, fail = self.metrics.total_requests()
        if not reset:
            ramp_req, ramp_fail = self.ramp.total_requests()
            req, fail = req + ramp_req, fail + ramp_fail
        return req, fail

    def measured(self, reset: bool) -> Metrics:
        """The rows the report shows: the steady phase after a reset, else everything."""
        if reset:
            return self.metrics
        target = Metrics(series=self.metrics.series)  # nothing was reset: the ramp belongs in the totals
        target.merge(self.metrics, with_series=False)
        target.merge(self.ramp, with_series=False)
        return target
