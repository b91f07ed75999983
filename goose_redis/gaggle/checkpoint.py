"""The Manager's checkpoint: what a restarted Manager needs to adopt the run in progress.

The ``checkpoint`` hash holds the run's state (``head``: run id, state, start time, the
current shape, every Worker's number, host, totals and ledger, the last stream id
merged), the merged rows (``rows``) and the chart series, one field per bucket
(``s:{key}``). It is written about once a second when something changed; a bucket only
when it changed, so a long run costs a few kilobytes a second, not its whole series.

The order is what makes a crash harmless: merge in memory, write the checkpoint (one
HSET, so Redis applies all of it or none), and only then acknowledge the deltas it
covers and trim the stream up to the last id it covers. A Manager killed at any moment
leaves a checkpoint that covers every acknowledged delta; whatever it merged after that
is still in the stream or still held by the Workers, and the ledger merges it once.

With a gaggle secret every field ends in ``:MAC`` (of its digest, bound to the run and
the field's name), so nobody without the secret can plant a checkpoint a restarted
Manager would adopt: a refused one is logged and the Manager starts a fresh run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ..metrics import Metrics, WireError
from ..series import Bucket, Series
from ..sketch import sketch_to_wire
from . import keys as K
from .auth import Auth, AuthError, Binding
from .ledger import WorkerLedger
from .link import RedisLink, is_wrong_type
from .protocol import PROTOCOL_VERSION, ProtocolError, ShapeMessage, ack_value
from .roster import WorkerState

if TYPE_CHECKING:
    from .manager import Manager

log = logging.getLogger("goose_redis.gaggle.manager")

CHECKPOINT_S = 1.0
# Rewrite every bucket now and then, besides after each outage: a Redis restarted from an
# older snapshot within one reconnect would otherwise keep buckets older than ours.
FULL_EVERY_S = 600.0


@dataclass
class Checkpoint:
    run_id: str
    fingerprint: str
    state: str
    started_at: float | None
    stopping_at: float | None
    stop_reason: str
    shape: ShapeMessage
    workers: list[WorkerState]
    last_id: str
    metrics: Metrics
    ramp: Metrics


# -- wire forms -------------------------------------------------------------------------------


def worker_to_wire(w: WorkerState) -> dict[str, Any]:
    led = w.ledger
    return {
        "id": w.id, "index": w.index, "host": w.host, "users": w.users, "ready": w.ready, "lost": w.lost,
        "ever_lost": w.ever_lost, "n": w.requests, "f": w.failures, "ramp": list(w.ramp),
        "reported": list(w.reported), "wm": led.watermark, "above": sorted(led.above), "final": led.final_seq,
    }  # fmt: skip


def _int(doc: dict[str, Any], name: str, none: bool = False) -> Any:
    value = doc.get(name)
    if none and value is None:
        return None
    if type(value) is not int or value < 0:
        raise ProtocolError(f"checkpoint worker field {name!r} is not a count")
    return value


def _pair(doc: dict[str, Any], name: str) -> tuple[int, int]:
    value = doc.get(name)
    if not (isinstance(value, list) and len(value) == 2 and all(type(x) is int for x in value)):
        raise ProtocolError(f"checkpoint worker field {name!r} is not a pair of counts")
    return value[0], value[1]


def worker_from_wire(doc: object) -> WorkerState:
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not isinstance(doc.get("host"), str):
        raise ProtocolError("a checkpoint worker is not an object with an id and a host")
    above = doc.get("above")
    if not (isinstance(above, list) and len(above) <= 100_000 and all(type(x) is int for x in above)):
        raise ProtocolError("a checkpoint worker's ledger is not a list of seqs")
    ledger = WorkerLedger(_int(doc, "wm"), set(above), _int(doc, "final", none=True))
    w = WorkerState(doc["id"], _int(doc, "index"), doc["host"], _int(doc, "users"), ledger)
    w.ready, w.lost, w.ever_lost = bool(doc.get("ready")), bool(doc.get("lost")), bool(doc.get("ever_lost"))
    w.requests, w.failures = _int(doc, "n"), _int(doc, "f")
    w.ramp, w.reported = _pair(doc, "ramp"), _pair(doc, "reported")
    return w


def bucket_to_wire(key: int, b: Bucket) -> bytes:
    return orjson.dumps([key, b.requests, b.failures, sketch_to_wire(b.sketch), b.rows, b.users, b.discarded])


def bucket_signature(b: Bucket) -> tuple[Any, ...]:
    """Changes whenever the bucket does (requests only add up; users only grow)."""
    return b.requests, b.failures, b.discarded[0], b.discarded[1], len(b.users), sum(b.users.values())


def rows_only(m: Metrics) -> Metrics:
    """The rows without the series (which is written bucket by bucket)."""
    return Metrics(m.requests, m.transactions, m.scenarios, co_requests=m.co_requests,
                   dropped_iterations=m.dropped_iterations)  # fmt: skip


def series_from_fields(interval: int, keys: list[int], fields: dict[bytes, bytes]) -> Series:
    series = Series(interval)
    for key in keys:
        raw = fields.get(f"s:{key}".encode())
        if raw is None:
            raise ProtocolError(f"checkpoint bucket {key} is missing")
        item = orjson.loads(raw)
        if not (isinstance(item, list) and len(item) == 7 and item[0] == key):
            raise ProtocolError(f"checkpoint bucket {key} is malformed")
        disc = item[6]
        if not (isinstance(disc, list) and len(disc) == 2 and all(type(x) is int for x in disc)):
            raise ProtocolError(f"checkpoint bucket {key} has a malformed discarded pair")
        one = Series.from_wire({"i": interval, "b": [item[:6]]})
        bucket = one.buckets[key]
        bucket.discarded = [disc[0], disc[1]]
        series.buckets[key] = bucket
    return series


def seal(auth: Auth | None, run_id: str, name: str, raw: bytes) -> bytes:
    """A checkpoint field as written: ``raw``, and with a secret ``:MAC``."""
    return auth.seal(Binding("checkpoint", run_id, name), raw) if auth is not None else raw


def unseal(auth: Auth | None, run_id: str, name: str, value: bytes) -> bytes:
    """A checkpoint field's JSON once its MAC is right; ProtocolError when refused."""
    try:
        return auth.unseal(Binding("checkpoint", run_id, name), value) if auth is not None else value
    except AuthError as exc:
        raise ProtocolError(f"checkpoint field {name!r} refused: {exc.reason}") from None


def parse_checkpoint(fields: dict[bytes, bytes], auth: Auth | None = None) -> Checkpoint:
    """The checkpoint hash as written by ``Checkpointer``; ProtocolError on anything else
    (with a secret: on any field whose MAC is missing or wrong)."""
    try:
        sealed_head = fields.get(b"head") or b"null"
        head = orjson.loads(sealed_head.rpartition(b":")[0] if auth is not None and auth.enabled else sealed_head)
        run_id = head.get("run_id") if isinstance(head, dict) else None
        if not isinstance(run_id, str):
            raise ProtocolError("the checkpoint has no head with a run id")
        unseal(auth, run_id, "head", sealed_head)  # the MAC of what was parsed, now its run is known
        rows = orjson.loads(unseal(auth, run_id, "rows", fields.get(b"rows") or b"null"))
        if not isinstance(head, dict) or head.get("v") != PROTOCOL_VERSION or not isinstance(rows, dict):
            raise ProtocolError("the checkpoint has no head or rows of this protocol version")
        shape = ShapeMessage.from_bytes(orjson.dumps(head.get("shape")))
        fingerprint, state = head.get("fingerprint"), head.get("state")
        if not (isinstance(fingerprint, str) and state in K.STATES):
            raise ProtocolError("the checkpoint's run id, fingerprint or state is invalid")
        started, stopping = head.get("started_at"), head.get("stopping_at")
        for t in (started, stopping):
            if t is not None and not isinstance(t, int | float):
                raise ProtocolError("a checkpoint time is not a number")
        series = head.get("series")
        if not (isinstance(series, dict) and type(series.get("i")) is int and series["i"] >= 1
                and isinstance(series.get("keys"), list) and all(type(k) is int for k in series["keys"])):  # fmt: skip
            raise ProtocolError("the checkpoint's series index is invalid")
        workers = head.get("workers")
        if not isinstance(workers, list) or len(workers) > 100_000:
            raise ProtocolError("the checkpoint's workers are not a list")
        metrics = Metrics.from_wire(rows.get("m"))
        buckets = {f"s:{k}".encode(): unseal(auth, run_id, f"s:{k}", fields[f"s:{k}".encode()])
                   for k in series["keys"] if f"s:{k}".encode() in fields}  # fmt: skip
        metrics.series = series_from_fields(series["i"], series["keys"], buckets)
        return Checkpoint(
            run_id, fingerprint, state, started, stopping, str(head.get("stop_reason") or ""), shape,
            [worker_from_wire(w) for w in workers], str(head.get("last_id") or "0-0"), metrics,
            Metrics.from_wire(rows.get("r")),
        )  # fmt: skip
    except (orjson.JSONDecodeError, WireError, ValueError, TypeError) as exc:
        if isinstance(exc, ProtocolError):
            raise
        raise ProtocolError(f"the checkpoint is unreadable: {exc}") from None


async def load_checkpoint(link: RedisLink, keys: K.Keys, auth: Auth | None = None) -> Checkpoint | None:
    """The checkpoint in Redis, or None (missing, of the wrong type, or unreadable: logged)."""
    try:
        fields: dict[Any, Any] = await link.client.hgetall(keys.checkpoint)
    except Exception as exc:
        if is_wrong_type(exc):
            log.warning("the checkpoint key holds another kind of value: nothing to resume from")
            return None
        raise
    if not fields:
        return None
    try:
        return parse_checkpoint(fields, auth)
    except ProtocolError as exc:
        log.warning("ignoring an unreadable checkpoint: %s", exc)
        return None


# -- writing ----------------------------------------------------------------------------------


class Checkpointer:
    """Writes the checkpoint, then acknowledges and trims what it covers (see the module doc)."""

    def __init__(self, manager: Manager) -> None:
        self.m = manager
        self.link = manager.link
        self.keys = manager.keys
        self.lock = asyncio.Lock()
        self.written: dict[int, tuple[Any, ...]] = {}  # bucket key -> signature in Redis
        self.last_state: bytes = b""  # head and rows as last written
        self.last_handled = -1
        self.last_trim = ""
        self.full_at = 0.0
        self.seen_outages = self.link.outages
        self.bytes_written = 0  # for the debug log: the cost of checkpoints

    def head(self, series: Series) -> dict[str, Any]:
        m = self.m
        return {
            "v": PROTOCOL_VERSION, "run_id": m.run_id, "fingerprint": m.fingerprint, "state": m.state,
            "started_at": m.started_at, "stopping_at": m.stopping_at, "stop_reason": m.stop_reason,
            "shape": orjson.loads(m.steering.message().to_bytes()),
            "workers": [worker_to_wire(w) for w in m.roster.by_index()],
            "last_id": _text(m.merger.last_id), "series": {"i": series.interval_s, "keys": sorted(series.buckets)},
            "at": self.link.now(),
        }  # fmt: skip

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_S)
            await self.link.attempt("writing the checkpoint", self.commit)

    async def flush(self) -> None:
        """Commit now (a state change, or the end of the run)."""
        await self.link.attempt("writing the checkpoint", self.commit)

    async def commit(self) -> None:
        async with self.lock:
            await self._commit()

    async def _commit(self) -> None:
        from .resume import still_in_charge  # (resume imports this module)

        if not await still_in_charge(self.m):  # a Manager frozen and replaced must not write
            return
        if self.link.outages != self.seen_outages or time.monotonic() - self.full_at > FULL_EVERY_S:
            self.seen_outages = self.link.outages  # Redis may have restarted empty: write it all
            self.written, self.last_state, self.full_at = {}, b"", time.monotonic()
        series = self.m.merger.metrics.series
        doc = self.head(series)
        head = orjson.dumps({**doc, "at": 0})  # compared without its time
        rows = orjson.dumps({"m": rows_only(self.m.merger.metrics).to_wire(),
                             "r": rows_only(self.m.merger.ramp).to_wire()})  # fmt: skip
        sigs = {key: bucket_signature(b) for key, b in series.buckets.items()}
        changed = {key for key, sig in sigs.items() if self.written.get(key) != sig}
        handled = self.m.merger.handled
        if head + rows == self.last_state and not changed and handled == self.last_handled:
            return
        auth, run_id = self.m.auth, self.m.run_id
        fields: dict[Any, Any] = {"head": seal(auth, run_id, "head", orjson.dumps(doc)),
                                  "rows": seal(auth, run_id, "rows", rows)}  # fmt: skip
        fields.update({f"s:{key}": seal(auth, run_id, f"s:{key}", bucket_to_wire(key, series.buckets[key]))
                       for key in changed})  # fmt: skip
        stale = [f"s:{key}" for key in self.written if key not in sigs]
        last_id = _text(self.m.merger.last_id)
        fresh = sum(1 for key in changed if key not in self.written)  # bucket fields new to Redis
        added = await self._write(fields, stale)
        if added is None:
            return
        if self.last_state and added != fresh:
            # head and rows were new to Redis: it lost the hash (a restart we did not
            # notice). Write it all again before acknowledging anything.
            self.written, self.last_state = {}, b""
            await self._commit()
            return
        self.written, self.last_state, self.last_handled = sigs, head + rows, handled
        self.bytes_written += sum(len(v) for v in fields.values())
        await self._ack_and_trim(last_id)

    async def _write(self, fields: dict[Any, Any], stale: list[str]) -> int | None:
        """The number of fields new to the hash, or None when it could not be written."""
        async with self.link.client.pipeline(transaction=False) as p:
            p.hset(self.keys.checkpoint, mapping=fields)  # one command: applied whole or not at all
            if stale:
                p.hdel(self.keys.checkpoint, *stale)
            p.expire(self.keys.checkpoint, K.LONG_TTL_S)
            res = self.link.replies("writing the checkpoint", await p.execute(raise_on_error=False))
        if is_wrong_type(res[0]):
            log.warning("the checkpoint key held another kind of value: deleted, written again")
            await self.link.client.delete(self.keys.checkpoint)
            self.written, self.last_state = {}, b""
            return None
        if isinstance(res[0], BaseException):
            raise res[0]
        return int(res[0])

    async def _ack_and_trim(self, last_id: str) -> None:
        workers = self.m.roster.workers.values()
        auth, run_id = self.m.auth, self.m.run_id  # with a secret, each value carries its MAC
        marks: dict[Any, Any] = {
            w.id: ack_value(auth, run_id, w.id, w.ledger.watermark) for w in workers if w.ledger.watermark > 0
        }
        trim = last_id not in ("0-0", self.last_trim)
        async with self.link.client.pipeline(transaction=False) as p:
            if marks:
                p.hset(self.keys.acks, mapping=marks)
                p.expire(self.keys.acks, K.LONG_TTL_S)  # from its first write: it never outlives the run
            if trim:  # every entry before the last one merged: the checkpoint covers them
                p.xtrim(self.keys.metrics, minid=last_id, approximate=False)
            res = self.link.replies("acknowledging metrics", await p.execute(raise_on_error=False))
        if trim and not isinstance(res[-1], BaseException):
            self.last_trim = last_id  # (a refused trim: the merger repairs the stream)
        if marks and is_wrong_type(res[0]):  # every acknowledgement is written again
            await self.link.rewrite_hash(self.keys.acks, marks, K.LONG_TTL_S, "the acks key")
        elif marks and isinstance(res[0], BaseException):
            raise res[0]


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)
