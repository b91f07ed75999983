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
from .ledger import WorkerLedger
from .link import RedisLink
from .protocol import Assignment, ProtocolError, Registration, as_text
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
    def __init__(self, config: Config, link: RedisLink, run_id: str, full_hash: str, peak_users: int) -> None:
        self.config = config
        self.link = link
        self.keys = K.Keys(config.gaggle)
        self.run_id = run_id
        self.full_hash = full_hash
        self.peak_users = peak_users
        self.workers: dict[str, WorkerState] = {}
        self.refused: set[str] = set()
        self.bad: set[str] = set()
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
        async with self.link.client.pipeline(transaction=False) as p:
            for wid, _ in new:
                p.exists(self.keys.heartbeat(wid))
            alive = await p.execute()
        dead = [wid for (wid, _), is_alive in zip(new, alive, strict=True) if not is_alive]
        if dead:  # registrations left by Workers killed with -9: no later Manager should poll them
            await self.link.client.hdel(self.keys.workers, *dead)
        for (wid, raw), is_alive in zip(new, alive, strict=True):
            if not is_alive:
                continue
            try:
                reg = Registration.from_bytes(raw)
            except ProtocolError as exc:
                if wid not in self.bad:
                    self.bad.add(wid)
                    log.warning("ignoring a malformed worker registration %r: %s", wid, exc)
                continue
            await self.admit(wid, reg)

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
            p.set(self.keys.assign(wid), self.assignment(w).to_bytes(), ex=K.LONG_TTL_S)
            p.publish(self.keys.control, K.WAKE_ASSIGN)
            await p.execute()
        log.info("worker %d of %d connected from %s (%s)", w.index, expect, reg.host, wid)
        log.info("sending %d users to worker %d", w.users, w.index)

    async def refuse(self, wid: str, reason: str, clean: bool) -> None:
        self.refused.add(wid)
        a = Assignment(self.run_id, 0, 0, 0, 0, None, 1.0, None, None, refuse=reason, clean=clean)
        async with self.link.client.pipeline(transaction=False) as p:
            p.set(self.keys.assign(wid), a.to_bytes(), ex=K.LONG_TTL_S)
            p.publish(self.keys.control, K.WAKE_ASSIGN)
            await p.execute()

    async def scan_ready(self) -> None:
        ready = {as_text(m) for m in await self.link.client.smembers(self.keys.ready)}
        for w in self.by_index():
            if w.id in ready and not w.ready:
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
        for w, (hb, users) in zip(watched, self.heartbeat_rows(rows), strict=True):
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
                changed = True
                log.log(NOTICE, "worker %d (%s) is back: it takes its share of the users again", w.index, w.host)
        return changed

    async def _read_heartbeats(self, watched: list[WorkerState]) -> list[Any]:
        async with self.link.client.pipeline(transaction=False) as p:
            for w in watched:
                p.hmget(self.keys.worker(w.id), ["hb", "users"])
            return list(await p.execute(raise_on_error=False))

    def heartbeat_rows(self, rows: list[Any]) -> list[tuple[Any, Any]]:
        """A refused read (a key of the wrong type) counts as no news, not as a crash."""
        return [(r[0], r[1]) if isinstance(r, list) and len(r) == 2 else (None, None) for r in rows]
