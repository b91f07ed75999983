"""The Manager's roster: who registered, who is admitted, who is ready, who is alive.

Workers register in the ``workers`` hash and prove they live by changing the ``hb``
field of their ``worker:{id}`` hash every second. The roster admits Workers up to
``--expect-workers`` (refusing those whose load test differs), tracks the start
barrier, and judges silence only over time it could observe (``silence.py``): a
Worker silent that long is *lost*, and one heard from again is *back* and takes a
slot once more, so the shape's users move to it and from it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ..config import Config
from ..logs import NOTICE
from ..shape import Slot
from . import keys as K
from .auth import Auth
from .ledger import WorkerLedger
from .link import RedisLink
from .protocol import (
    HEARTBEAT_FIELDS,
    Assignment,
    ProtocolError,
    Registration,
    Unauthenticated,
    as_text,
    read_heartbeat,
)
from .silence import Silence

log = logging.getLogger("goose_redis.gaggle.manager")


@dataclass
class WorkerState:
    id: str
    index: int
    host: str
    users: int  # its share at the initial shape's peak (for logs and the summary)
    ledger: WorkerLedger = field(default_factory=WorkerLedger)
    ready: bool = False
    lost: bool = False
    ever_lost: bool = False
    requests: int = 0  # merged, ramp-up included
    failures: int = 0
    ramp: tuple[int, int] = (0, 0)  # the part of those sent before the metrics reset
    reported: tuple[int, int] = (0, 0)  # the Worker's own running totals
    active_users: int = 0
    silence: Silence = field(default_factory=lambda: Silence(cap_s=2 * K.POLL_S))
    signed_hb: float = 0.0  # with a secret: the newest verified heartbeat time, and its state
    signed_state: str = ""

    @property
    def holds_slot(self) -> bool:
        return not self.lost and not self.ledger.complete

    def summary(self, reset: bool) -> dict[str, Any]:
        """``requests``/``failures`` as the tables count them (after a reset, the steady
        phase only), so the workers add up to the aggregated row; ``all_*`` include the ramp-up."""
        cut = self.ramp if reset else (0, 0)
        return {
            "index": self.index,
            "id": self.id,
            "host": self.host,
            "users": self.users,
            "requests": self.requests - cut[0],
            "failures": self.failures - cut[1],
            "all_requests": self.requests,
            "all_failures": self.failures,
            "ramp_requests": self.ramp[0],
            "ramp_failures": self.ramp[1],
            "state": "lost" if self.lost else ("done" if self.ledger.complete else "incomplete"),
        }


class Roster:
    def __init__(self, config: Config, link: RedisLink, run_id: str, full_hash: str, peak_users: int,
                 auth: Auth | None = None) -> None:  # fmt: skip
        self.config = config
        self.auth = auth or Auth(None, config.gaggle)
        self.link = link
        self.keys = K.Keys(config.gaggle)
        self.run_id = run_id
        self.full_hash = full_hash
        self.peak_users = peak_users
        self.workers: dict[str, WorkerState] = {}
        self.refused: set[str] = set()
        self.bad: set[str] = set()
        self.forgotten: set[str] = set()  # lost Workers whose registration was removed
        self.foreign: set[tuple[str, str]] = set()  # (worker, run) registrations of another run, logged
        self.open = True  # admitting Workers (the barrier has not opened yet)

    def by_index(self) -> list[WorkerState]:
        return sorted(self.workers.values(), key=lambda w: w.index)

    def slot_holders(self) -> list[str]:
        """The Workers that run users, in slot order (by Worker number)."""
        return [w.id for w in self.by_index() if w.holds_slot]

    def assignment(self, w: WorkerState) -> Assignment:
        c = self.config
        return Assignment(
            run_id=self.run_id,
            index=w.index,
            workers=c.expect_workers,
            users=w.users,
            total_users=self.peak_users,
            host=c.host,
            timeout_s=c.timeout_s,
            iterations=c.iterations,
            scenarios=c.scenarios,
            co_mitigation=c.co_mitigation,
        )

    # -- registration ---------------------------------------------------------------

    async def scan_registrations(self) -> None:
        regs: dict[Any, Any] = await self.link.client.hgetall(self.keys.workers)
        new = [(as_text(wid), raw) for wid, raw in regs.items()]
        new = [(wid, raw) for wid, raw in new if wid not in self.workers and wid not in self.refused]
        if not new:
            return
        alive = await self.alive([wid for wid, _ in new])
        await self.forget([wid for wid, _ in new if wid not in alive])
        for wid, raw in new:
            if wid not in alive:
                continue
            try:
                reg = Registration.from_bytes(raw, self.auth, worker=wid, now=self.link.now())
            except Unauthenticated:
                continue  # counted, the first logged; not remembered: the real Worker may write its own next
            except ProtocolError as exc:
                if wid not in self.bad:
                    self.bad.add(wid)
                    log.warning("ignoring a malformed worker registration %r: %s", wid, exc)
                continue
            if reg.run_id is not None and reg.run_id != self.run_id:
                # A Worker of an earlier run, whose Manager is gone: that run is over. It sees a
                # new run id in `run` and stops (or, still at that run's barrier, registers
                # again without a run id, and is taken in then); it takes no place now.
                if (wid, reg.run_id) not in self.foreign:
                    self.foreign.add((wid, reg.run_id))
                    log.log(NOTICE, "worker %s from %s belongs to run %s, which is over: not admitted",
                            wid, reg.host, reg.run_id)  # fmt: skip
                continue
            await self.admit(wid, reg)

    async def alive(self, ids: list[str]) -> set[str]:
        """The ids whose heartbeat key exists."""
        if not ids:
            return set()
        async with self.link.client.pipeline(transaction=False) as p:
            for wid in ids:
                p.exists(self.keys.heartbeat(wid))
            found = await p.execute()
        return {wid for wid, n in zip(ids, found, strict=True) if n}

    async def forget(self, dead: list[str]) -> None:
        """Registrations of Workers killed with -9 (no heartbeat key): no later Manager should poll them."""
        if dead:
            await self.link.client.hdel(self.keys.workers, *dead)

    async def forget_lost(self) -> None:
        """Lost Workers whose heartbeat key has expired too: they are gone for good (kill -9)."""
        lost = [w.id for w in self.workers.values() if w.lost and w.id not in self.forgotten]
        gone = [wid for wid in lost if wid not in await self.alive(lost)]
        await self.forget(gone)
        self.forgotten.update(gone)

    async def admit(self, wid: str, reg: Registration) -> None:
        if self.config.hash_check and reg.hash != self.full_hash:
            reason = (
                f"its load test differs from the manager's (hash {reg.hash} != {self.full_hash}); "
                "run the same load-test file, or set --no-hash-check on the manager"
            )
            await self.refuse(wid, reason, clean=False)
            log.error("refused worker %s from %s: %s", wid, reg.host, reason)
            return
        expect = self.config.expect_workers
        taken = {w.index for w in self.workers.values()}
        free = [i for i in range(1, expect + 1) if i not in taken]
        if not self.open or not free:
            await self.refuse(wid, f"the gaggle already has its {expect} workers", clean=True)
            log.log(NOTICE, "worker %s from %s is beyond --expect-workers: told to exit", wid, reg.host)
            return
        index = free[0]
        w = WorkerState(wid, index, reg.host, Slot.of(index - 1, expect).count(self.peak_users))
        self.workers[wid] = w
        async with self.link.client.pipeline(transaction=False) as p:
            p.set(self.keys.assign(wid), self.assignment(w).to_bytes(self.auth, worker=wid), ex=K.LONG_TTL_S)
            p.publish(self.keys.control, K.WAKE_ASSIGN)
            await p.execute()
        log.info("worker %d of %d connected from %s (%s)", w.index, expect, reg.host, wid)
        log.info("sending %d users to worker %d", w.users, w.index)

    async def refuse(self, wid: str, reason: str, clean: bool) -> None:
        self.refused.add(wid)
        a = Assignment(self.run_id, 0, 0, 0, 0, None, 1.0, None, None, refuse=reason, clean=clean)
        async with self.link.client.pipeline(transaction=False) as p:
            p.set(self.keys.assign(wid), a.to_bytes(self.auth, worker=wid), ex=K.LONG_TTL_S)
            p.publish(self.keys.control, K.WAKE_ASSIGN)
            await p.execute()

    async def scan_ready(self) -> None:
        ready = {as_text(m) for m in await self.link.client.smembers(self.keys.ready)}
        for w in self.by_index():
            # With a secret the set is not enough (anyone can SADD): the signed heartbeat must say so too.
            if w.id in ready and not w.ready and (not self.auth.enabled or w.signed_state == "ready"):
                w.ready = True
                n = sum(1 for x in self.workers.values() if x.ready)
                log.info("worker %d is ready (%d/%d)", w.index, n, self.config.expect_workers)

    def drop_lost_before_start(self) -> None:
        for w in [w for w in self.workers.values() if w.lost]:
            log.warning("worker %d was lost before the start; its place is free again", w.index)
            del self.workers[w.id]
            self.refused.add(w.id)

    def all_ready(self) -> bool:
        return sum(1 for w in self.workers.values() if w.ready) == self.config.expect_workers

    # -- liveness ---------------------------------------------------------------------

    async def check_liveness(self) -> bool:
        """Read every heartbeat; True when a Worker was lost or came back (the slots changed)."""
        watched = [w for w in self.workers.values() if not w.ledger.complete]
        if not watched:
            return False
        rows = await self.link.attempt("checking heartbeats", lambda: self._read_heartbeats(watched))
        if rows is None:
            for w in watched:
                w.silence.blind()  # we saw nothing: that time is nobody's silence
            return False
        now = time.monotonic()
        changed = False
        for w, row in zip(watched, self.heartbeat_rows(rows, watched), strict=True):
            if row is None:
                w.silence.blind()  # its hash is of the wrong type (the Worker repairs it): no news
                continue
            hb, users = row
            try:
                w.active_users = int(users) if users is not None else w.active_users
            except ValueError:
                pass
            quiet = w.silence.observe(hb, now)
            if not w.lost and quiet > K.WORKER_LOST_AFTER_S:
                w.lost = w.ever_lost = True
                changed = True
                log.error("worker %d (%s) lost: no heartbeat for %.0fs; keeping its %d requests so far",
                          w.index, w.host, quiet, w.requests)  # fmt: skip
            elif w.lost and quiet == 0.0:
                w.lost = False
                self.forgotten.discard(w.id)
                changed = True
                log.log(NOTICE, "worker %d (%s) is back: it takes its share of the users again", w.index, w.host)
        return changed

    async def _read_heartbeats(self, watched: list[WorkerState]) -> list[Any]:
        async with self.link.client.pipeline(transaction=False) as p:
            for w in watched:
                p.hmget(self.keys.worker(w.id), list(HEARTBEAT_FIELDS))
            return self.link.replies("checking heartbeats", list(await p.execute(raise_on_error=False)))

    def heartbeat_rows(self, rows: list[Any], watched: list[WorkerState]) -> list[tuple[Any, Any] | None]:
        """(hb, users) per Worker; None for a refused read (a key of the wrong type: the Worker
        repairs it; meanwhile we saw nothing). With a secret, a heartbeat that is not signed or not
        newer than the last one is no news (replaying two old ones in turn must not keep a lost
        Worker alive)."""
        out: list[tuple[Any, Any] | None] = []
        for w, r in zip(watched, rows, strict=True):
            if not (isinstance(r, list) and len(r) == len(HEARTBEAT_FIELDS)):
                if isinstance(r, BaseException):
                    self.link.note_refused("checking heartbeats", r)
                out.append(None)
                continue
            try:
                got = read_heartbeat(self.auth, w.id, r)
            except ProtocolError:  # Unauthenticated: counted, the first logged
                out.append((None, None))
                continue
            if self.auth.enabled:
                try:
                    hb = float(got["hb"])
                except (TypeError, ValueError):
                    hb = 0.0
                if hb > w.signed_hb:
                    w.signed_hb, w.signed_state = hb, as_text(got["state"])
                out.append((w.signed_hb or None, got["users"]))
            else:
                out.append((got["hb"], got["users"]))
        return out
