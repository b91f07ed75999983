"""A Worker's presence in Redis: its registration, its heartbeat and the keys it owns, and
what each heartbeat brings back (acknowledgements, the Manager's heartbeat).

Every beat re-asserts what the Worker owns (a restarted Redis forgets it): ``hb:{id}``,
``worker:{id}``, its entry in ``workers`` (with its run id once assigned, so a later
run's Manager leaves it out), its membership of ``ready`` at the barrier, and its stop
request until the run stops. The replies are checked one by one: an owned key of the
wrong type is deleted and written again; a read of the wrong type is no news, and a
Manager heartbeat it could not read is nobody's silence.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from ..config import Config
from ..procgroup import Engine
from ..scenario import LoadTest
from . import keys as K
from .auth import Auth, SecretCheck
from .link import RedisGone, RedisLink, Wakeup, is_wrong_type
from .outbox import Outbox
from .protocol import Assignment, ManagerBeat, ProtocolError, Registration, StopRequest, Unauthenticated, sign_heartbeat
from .silence import Silence

log = logging.getLogger("goose_redis.gaggle.worker")


class Presence:
    """Mixed into ``Worker`` (worker.py), which sets these attributes."""

    config: Config
    link: RedisLink
    keys: K.Keys
    id: str
    host: str
    state: str
    full_test: LoadTest
    assignment: Assignment | None
    runner: Engine | None
    outbox: Outbox
    stop_msg: StopRequest | None
    manager_silence: Silence
    manager_seen: bool
    manager_gone: bool
    bad_logged: set[str]
    repaired: set[str]
    auth: Auth  # with a secret: what this Worker writes is signed, what it reads verified
    secret_check: SecretCheck
    refused_by: str | None  # why this Worker cannot join (its secret does not match the Manager's)
    last_beat: dict[str, Any]
    local_stop: asyncio.Event
    wake: Wakeup

    def registration(self) -> bytes:
        run_id = self.assignment.run_id if self.assignment else None  # a later run's Manager leaves us out
        return Registration(self.id, self.host, os.getpid(), self.full_test.full_hash(), self.link.now(),
                            run_id).to_bytes(self.auth, worker=self.id)  # fmt: skip

    async def beat(self) -> bool:
        """Heartbeat, and re-assert every fact this Worker owns (a restarted Redis forgets them)."""
        k = self.keys
        requests, failures = self.outbox.totals()
        fields: dict[Any, Any] = {
            "state": self.state,
            "host": self.host,
            "pid": os.getpid(),
            "index": self.assignment.index if self.assignment else 0,
            "users": self.runner.active if self.runner else 0,
            "requests": requests,
            "failures": failures,
            "hb": self.link.now(),
        }
        self.last_beat = {"hb": fields["hb"], "users": fields["users"]}
        signed = sign_heartbeat(self.auth, self.id, fields)  # with a secret: hb, users and state signed
        # Keys this Worker owns, each re-asserted every beat; one of the wrong type is repaired.
        mine = k.worker(self.id)
        owned: list[tuple[str, Any]] = [(mine, lambda p: p.hset(mine, mapping=signed).expire(mine, K.LONG_TTL_S))]
        if self.state not in ("done", "exited"):
            owned.append((k.workers, lambda p: p.hset(k.workers, self.id, self.registration())))
        if self.state == "ready":
            owned.append((k.ready, lambda p: p.sadd(k.ready, self.id).expire(k.ready, K.LONG_TTL_S)))
        async with self.link.client.pipeline(transaction=False) as p:
            p.set(k.heartbeat(self.id), self.link.now(), ex=K.HEARTBEAT_TTL_S)
            first = []  # where each owned write's first reply will be (the one Redis may refuse)
            for _key, write in owned:
                first.append(len(p.command_stack))
                write(p)
            if self.stop_msg is not None and self.state in ("running", "stopping"):
                run = self.assignment.run_id if self.assignment else ""
                p.set(k.stop, self.stop_msg.to_bytes(self.auth, run_id=run), nx=True,
                      ex=K.LONG_TTL_S)  # a restarted Redis forgot it  # fmt: skip
            p.hget(k.acks, self.id)
            p.get(k.manager)
            res = self.link.replies("sending a heartbeat", await p.execute(raise_on_error=False))
        ack, beat = res[-2], res[-1]
        await self._repair([owned[n] for n, i in enumerate(first) if is_wrong_type(res[i])])
        if isinstance(ack, Exception):  # junk in acks: no news (the Manager repairs it)
            self.link.note_refused("reading acknowledgements", ack)
        else:
            self.outbox.on_ack(ack)
        if isinstance(beat, Exception):
            self.link.note_refused("reading the manager heartbeat", beat)
            self.manager_silence.blind()  # we could not see it: that is not the Manager's silence
        else:
            self._on_manager_beat(beat)
        return True

    async def _repair(self, broken: list[tuple[str, Any]]) -> None:
        """Keys this Worker owns that hold another kind of value: delete them and write them again."""
        if not broken:
            return
        async with self.link.client.pipeline(transaction=False) as p:
            for key, write in broken:
                if key not in self.repaired:
                    self.repaired.add(key)
                    log.warning("%s held another kind of value: deleted, written again", key)
                p.delete(key)
                write(p)
            self.link.replies("repairing keys", await p.execute(raise_on_error=False))

    def _on_manager_beat(self, raw: object) -> None:
        value = None
        verified: bool | None = None
        if raw is not None:
            try:
                beat = ManagerBeat.from_bytes(raw, self.auth)
            except Unauthenticated:
                verified = False
            except ProtocolError as exc:
                self._warn_once("beat", "ignoring a malformed manager heartbeat: %s", exc)
            else:
                verified = True
                if self.assignment is None or beat.run_id == self.assignment.run_id:
                    value = beat.at
                    self.manager_seen = True
        self.manager_silence.observe(value, time.monotonic())
        if self.assignment is None and self.refused_by is None:  # say so and exit rather than wait for ever
            self.refused_by = self.secret_check.observe(verified, time.monotonic())
            if self.refused_by is not None:
                log.error("%s", self.refused_by)
                self.local_stop.set()
                self.wake.event.set()

    def _warn_once(self, what: str, msg: str, *args: Any) -> None:
        if what not in self.bad_logged:  # junk stays where it is: say so once, not every poll
            self.bad_logged.add(what)
            log.warning(msg, *args)

    async def register(self) -> None:
        async with self.link.client.pipeline(transaction=False) as p:
            p.hset(self.keys.workers, self.id, self.registration())
            p.set(self.keys.heartbeat(self.id), self.link.now(), ex=K.HEARTBEAT_TTL_S)
            p.publish(self.keys.control, K.WAKE_REGISTER)
            await p.execute()

    async def _unregister(self) -> None:
        self.state = "exited" if self.state != "done" else "done"

        async def drop() -> None:
            async with self.link.client.pipeline(transaction=False) as p:
                p.hdel(self.keys.workers, self.id)
                p.delete(self.keys.heartbeat(self.id))
                p.srem(self.keys.ready, self.id)
                last: dict[Any, Any] = {"state": self.state}
                if self.auth.enabled:  # re-signed: our last word must not read as a forgery
                    last = sign_heartbeat(self.auth, self.id, {**self.last_beat, "state": self.state})
                p.hset(self.keys.worker(self.id), mapping=last)
                await p.execute(raise_on_error=False)

        try:
            await asyncio.wait_for(self.link.attempt("unregistering", drop), 3.0)
        except (TimeoutError, RedisGone):
            pass

    def _manager_missing(self) -> bool:
        """The Manager's heartbeat has not changed for the grace period, counting only
        time we could watch it (our own stalls and Redis's do not count)."""
        gone = self.manager_silence.quiet_s > self.config.manager_grace_s
        if gone and not self.manager_gone:
            self.manager_gone = True
            log.error("manager went away (no heartbeat for %.0fs); stopping", self.manager_silence.quiet_s)
        return gone
