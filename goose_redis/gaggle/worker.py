"""A Gaggle Worker: the local engine plus a Redis adapter.

Register, heartbeat, take an assignment, wait at the barrier, start at the
gaggle's shared start time, push metric deltas into the stream until they
are acknowledged, and stop on EXIT (or ask the gaggle to stop on Ctrl-C).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from typing import IO, Any

from redis.exceptions import RedisError

from ..config import Config
from ..logs import NOTICE, set_prefix
from ..metrics import Metrics
from ..recorder import Recorder
from ..runner import Runner, RunOptions, launch_plan
from ..scenario import LoadTest, filter_scenarios
from ..signals import install_stop_handlers
from . import keys as K
from .link import RedisGone, RedisLink, Wakeup, cancel_and_wait, run_linked, shift_series
from .protocol import Assignment, ManagerBeat, MetricsEntry, ProtocolError, Registration, StopRequest

log = logging.getLogger("goose_redis.gaggle.worker")

# Re-send unacknowledged deltas when the Manager has not acknowledged them for
# this long (for example Redis restarted and lost the stream).
RESEND_AFTER_S = 5.0
EXIT_OK, EXIT_ERROR = 0, 1


@dataclass
class Pending:
    seq: int
    fields: dict[Any, Any]
    sent_at: float = 0.0  # monotonic; 0 = not sent yet


class Worker:
    def __init__(self, config: Config, load_test: LoadTest, link: RedisLink) -> None:
        self.config = config
        self.full_test = load_test
        self.link = link
        self.keys = K.Keys(config.gaggle)
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self.host = socket.gethostname()
        self.state = "registered"
        self.assignment: Assignment | None = None
        self.runner: Runner | None = None
        self.metrics = Metrics()
        self.in_ramp = True
        self.seq = 0
        self.pending: list[Pending] = []
        self.sent_requests = 0
        self.sent_failures = 0
        self.acked = 0
        self.stop_reason: str | None = None
        self.manager_seen: float | None = None  # monotonic
        self.manager_gone = False
        self.wake = Wakeup(link, self.keys.control)
        self.local_stop = asyncio.Event()
        self.bad_stop_logged = False
        self.request_log: IO[bytes] | None = None

    # -- Redis writes -----------------------------------------------------

    def registration(self) -> bytes:
        return Registration(self.id, self.host, os.getpid(), self.full_test.full_hash(), self.link.now()).to_bytes()

    async def beat(self) -> None:
        """Heartbeat, and re-assert every fact this Worker owns (a restarted Redis forgets them)."""
        k = self.keys
        live_requests, live_failures = self.metrics.total_requests()
        fields: dict[Any, Any] = {
            "state": self.state,
            "host": self.host,
            "pid": os.getpid(),
            "index": self.assignment.index if self.assignment else 0,
            "users": self.runner.active if self.runner else 0,
            "requests": self.sent_requests + live_requests,
            "failures": self.sent_failures + live_failures,
            "hb": self.link.now(),
        }
        async with self.link.client.pipeline(transaction=False) as p:
            p.set(k.heartbeat(self.id), self.link.now(), ex=K.HEARTBEAT_TTL_S)
            p.hset(k.worker(self.id), mapping=fields)
            p.expire(k.worker(self.id), K.LONG_TTL_S)
            if self.state not in ("done", "exited"):
                p.hset(k.workers, self.id, self.registration())
            if self.state == "ready":
                p.sadd(k.ready, self.id)
            p.hget(k.acks, self.id)
            p.get(k.manager)
            res = await p.execute()
        self._on_ack(res[-2])
        self._on_manager_beat(res[-1])

    def _on_ack(self, raw: object) -> None:
        try:
            acked = int(raw) if raw is not None else 0  # type: ignore[call-overload]
        except (TypeError, ValueError):
            log.warning("ignoring a malformed acknowledgement %r", raw)
            return
        if acked > self.acked:
            self.acked = acked
            self.pending = [p for p in self.pending if p.seq > acked]

    def _on_manager_beat(self, raw: object) -> None:
        if raw is None:
            return
        try:
            beat = ManagerBeat.from_bytes(raw)
        except ProtocolError as exc:
            log.warning("ignoring a malformed manager heartbeat: %s", exc)
            return
        if self.assignment is None or beat.run_id == self.assignment.run_id:
            self.manager_seen = time.monotonic()

    async def send_pending(self) -> None:
        now = time.monotonic()
        if self.pending and self.pending[0].sent_at and now - self.pending[0].sent_at > RESEND_AFTER_S:
            log.info("metrics up to seq %d not acknowledged; re-sending %d deltas", self.acked, len(self.pending))
            for p in self.pending:
                p.sent_at = 0.0
        for p in self.pending:
            if p.sent_at:
                continue
            add = functools.partial(
                self.link.client.xadd, self.keys.metrics, p.fields, maxlen=K.STREAM_MAXLEN, approximate=True
            )
            if await self.link.attempt("sending metrics", add) is None:
                return  # keep it; the next round retries
            p.sent_at = time.monotonic()

    def enqueue(self, final: bool = False, sketches: bool = True) -> None:
        """Cut a delta now (cheap, no I/O); sending happens in the flush loop.
        ``sketches=False`` keeps the rows' sketches for a later delta (the counts go now)."""
        assert self.assignment is not None
        delta = self.metrics.take(sketches=sketches or final)
        n, f = delta.total_requests()
        if delta.is_empty() and not final:
            return
        delta.series = shift_series(delta.series, self.link.skew_s)  # our clock -> the gaggle's
        self.sent_requests += n
        self.sent_failures += f
        self.seq += 1
        phase = "ramp" if self.in_ramp and self.assignment.reset_metrics else "steady"
        entry = MetricsEntry(
            self.assignment.run_id, self.id, self.seq, phase, final, self.sent_requests, self.sent_failures, delta
        )
        self.pending.append(Pending(self.seq, entry.to_fields()))

    # -- phases -----------------------------------------------------------

    async def run(self) -> int:
        install_stop_handlers(self._on_signal)
        self.wake.start()
        beat_task = asyncio.create_task(self._beat_loop())
        try:
            await self.link.attempt("registering", self.register)
            log.info("registered as %s in gaggle %r; waiting for the manager", self.id, self.config.gaggle)
            code = await self._wait_for_assignment()
            if code is not None:
                return code
            code = await self._wait_for_start()
            if code is not None:
                return code
            return await self._run_load()
        except RedisGone as exc:
            log.error("%s", exc)
            if self.runner is not None:
                self.runner.stop("Redis is gone")
            return EXIT_ERROR
        finally:
            await cancel_and_wait(beat_task)
            await self.wake.stop()
            await self._unregister()
            if self.request_log is not None:
                self.request_log.close()

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
                p.hset(self.keys.worker(self.id), "state", self.state)
                await p.execute()

        try:
            await asyncio.wait_for(self.link.attempt("unregistering", drop), 3.0)
        except (TimeoutError, RedisGone):
            pass

    def _on_signal(self, signame: str) -> None:
        self.stop_reason = f"{signame} on worker {self.assignment.index if self.assignment else '?'}"
        self.local_stop.set()
        if self.runner is not None:
            self.runner.stop(self.stop_reason)
        self.wake.event.set()

    async def _beat_loop(self) -> None:
        while True:
            try:
                await self.link.attempt("sending a heartbeat", self.beat)
            except RedisGone:
                if self.runner is not None:
                    self.runner.stop("Redis is gone")
                self.local_stop.set()
                return
            except RedisError as exc:
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(K.HEARTBEAT_S)

    async def _read_assignment(self) -> Assignment | None:
        raw = await self.link.attempt("reading the assignment", lambda: self.link.client.get(self.keys.assign(self.id)))
        if raw is None:
            return None
        try:
            return Assignment.from_bytes(raw)
        except ProtocolError as exc:
            log.warning("ignoring a malformed assignment: %s", exc)
            return None

    async def _wait_for_assignment(self) -> int | None:
        waiting_logged = False
        started = time.monotonic()
        while not self.local_stop.is_set():
            a = await self._read_assignment()
            if a is not None:
                if a.refuse is not None:
                    if a.clean:
                        log.log(NOTICE, "the manager told this worker to exit: %s", a.refuse)
                        return EXIT_OK
                    log.error("refused by the manager: %s", a.refuse)
                    return EXIT_ERROR
                return self._accept(a)
            if not waiting_logged and time.monotonic() - started > 3.0 and self.manager_seen is None:
                log.log(NOTICE, "no manager in gaggle %r yet; waiting for it", self.config.gaggle)
                waiting_logged = True
            await self.wake.wait(K.POLL_S)
        return EXIT_OK

    def _accept(self, a: Assignment) -> int | None:
        self.assignment = a
        set_prefix(f"[{a.index}] ")
        chosen = filter_scenarios(self.full_test.all_scenarios, a.scenarios)
        self.load_test = LoadTest(chosen, self.full_test.all_scenarios)
        plan = launch_plan(self.load_test, a.total_users, a.interval_s, a.index - 1, a.workers)
        ramp_end = (a.total_users - 1) * a.interval_s
        options = RunOptions(
            host=a.host,
            timeout_s=a.timeout_s,
            iterations=a.iterations,
            run_time_s=None,  # the Manager ends the run
            ramp_end_s=ramp_end,
            reset_metrics=a.reset_metrics,
            source=self.id,
        )
        if self.config.request_log:  # each Worker keeps its own request log, on its own host
            self.request_log = open(self.config.request_log, "wb")  # noqa: SIM115 - closed in run()
        self.runner = Runner(self.load_test, plan, options, Recorder(self.metrics, self.request_log))
        self.manager_seen = time.monotonic()
        log.info(
            "worker %d connected: %d of %d users (every %d. user, launch interval %.3gs)",
            a.index,
            len(plan),
            a.total_users,
            a.workers,
            a.interval_s * a.workers,
        )
        self.state = "ready"
        log.info("%d users initialized; waiting for the go-ahead", len(plan))
        return None

    def _manager_missing(self) -> bool:
        if self.manager_seen is None:
            return False
        if not self.link.up:
            # Nobody's heartbeat can be seen while Redis is away: the grace starts again
            # when it is back, so a restart longer than the grace is not a lost Manager.
            self.manager_seen = time.monotonic()
            return False
        gone = time.monotonic() - self.manager_seen > self.config.manager_grace_s
        if gone and not self.manager_gone:
            self.manager_gone = True
            log.error("manager went away (no heartbeat for %.0fs); stopping", self.config.manager_grace_s)
        return gone

    async def _read_run(self) -> dict[Any, Any] | None:
        return await self.link.attempt("reading the run state", lambda: self.link.client.hgetall(self.keys.run))

    async def _wait_for_start(self) -> int | None:
        assert self.assignment is not None and self.runner is not None
        await self.link.attempt("joining the barrier", lambda: self.link.client.sadd(self.keys.ready, self.id))
        await self.link.attempt(
            "waking the manager", lambda: self.link.client.publish(self.keys.control, K.WAKE_REGISTER)
        )
        while not self.local_stop.is_set():
            if self._manager_missing():
                return EXIT_ERROR
            run = await self._read_run()
            if run and run.get(b"run_id", b"").decode() == self.assignment.run_id:
                state = run.get(b"state", b"").decode()
                if state == K.RUNNING:
                    try:
                        self.start_at = float(run[b"started_at"])
                    except (KeyError, ValueError):
                        log.warning("ignoring a run state without a valid started_at")
                    else:
                        return None
                elif state in (K.STOPPING, K.DONE):
                    log.log(NOTICE, "the run stopped before it started")
                    return EXIT_OK
            await self.wake.wait(K.POLL_S / 2)
        return EXIT_OK

    async def _run_load(self) -> int:
        assert self.assignment is not None and self.runner is not None
        runner = self.runner
        self.state = "running"
        local_start = self.link.local(self.start_at)
        self.runner.recorder.origin = local_start
        log.info("go-ahead received: starting at %s", time.strftime("%H:%M:%S", time.localtime(local_start)))

        def on_ramp_done() -> None:
            self.enqueue()
            self.in_ramp = False

        run_task = asyncio.create_task(runner.run(local_start, on_ramp_done))
        watch_task = asyncio.create_task(self._watch(runner))
        flush_task = asyncio.create_task(self._flush_loop())
        try:
            await run_task
        finally:
            await cancel_and_wait(watch_task, flush_task)
        self.state = "stopping"
        if self.stop_reason and not self.manager_gone:
            await self._request_stop(self.stop_reason)
        self.enqueue(final=True)
        log.info("final metrics: %d requests, %d failures (seq %d)", self.sent_requests, self.sent_failures, self.seq)
        delivered = await self._deliver_final()
        self.state = "done"
        if self.manager_gone:
            return EXIT_ERROR
        return EXIT_OK if delivered else EXIT_ERROR

    async def _request_stop(self, reason: str) -> None:
        msg = StopRequest(f"worker {self.assignment.index if self.assignment else '?'}", reason, self.link.now())

        async def tell() -> None:
            c = self.link.client
            if not await c.set(self.keys.stop, msg.to_bytes(), nx=True, ex=K.LONG_TTL_S):
                try:  # the first stop request wins, but junk in its place must not silence ours
                    StopRequest.from_bytes(await c.get(self.keys.stop))
                except ProtocolError:
                    await c.set(self.keys.stop, msg.to_bytes(), ex=K.LONG_TTL_S)
            await c.publish(self.keys.control, K.WAKE_EXIT)

        await self.link.attempt("asking the gaggle to stop", tell)
        log.log(NOTICE, "asked the gaggle to stop: %s", reason)

    async def _watch(self, runner: Runner) -> None:
        """Stop on EXIT (the run state, or a stop request from anyone), or a lost Manager."""
        assert self.assignment is not None
        while not runner.stop_event.is_set():
            await self.wake.wait(K.POLL_S)
            if self._manager_missing():
                runner.stop("manager went away")
                return
            run = await self._read_run()
            if run and run.get(b"state", b"").decode() in (K.STOPPING, K.DONE):
                reason = run.get(b"stop_reason", b"").decode() or "the manager"
                log.log(NOTICE, "received EXIT (%s)", reason)
                runner.stop(f"EXIT: {reason}")
                return
            stop_raw = await self.link.attempt("reading stop requests", lambda: self.link.client.get(self.keys.stop))
            if stop_raw is not None:
                try:
                    req = StopRequest.from_bytes(stop_raw)
                except ProtocolError as exc:
                    if not self.bad_stop_logged:  # it stays there: say so once, not every poll
                        self.bad_stop_logged = True
                        log.warning("ignoring a malformed stop request: %s", exc)
                else:
                    log.log(NOTICE, "received EXIT (%s: %s)", req.by, req.reason)
                    runner.stop(f"EXIT from {req.by}")
                    return

    async def _flush_loop(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(K.METRICS_INTERVAL_S)
            rounds += 1
            self.enqueue(sketches=rounds % K.SKETCH_EVERY == 0)
            await self.send_pending()

    async def _deliver_final(self) -> bool:
        """Send until the Manager acknowledged the final delta (bounded)."""
        deadline = time.monotonic() + self.config.final_wait_s
        while self.pending and time.monotonic() < deadline:
            await self.send_pending()
            if self._manager_missing():
                return False
            await asyncio.sleep(0.1)
            await self.link.attempt("waiting for acknowledgement", self.beat)
        if self.pending:
            log.error("the manager did not acknowledge the final metrics in %.0fs", self.config.final_wait_s)
            return False
        return True


async def run_worker(config: Config, load_test: LoadTest) -> int:
    return await run_linked(
        config.redis_url, config.redis_deadline_s, lambda link: Worker(config, load_test, link).run()
    )
