"""A Gaggle Worker: the local engine plus a Redis adapter.

Register, heartbeat, take an assignment, wait at the barrier, start at the
gaggle's shared start time, follow the shape the Manager publishes (its users
move with the gaggle's), push metric deltas until they are acknowledged
(``outbox``), and stop on EXIT (or ask the gaggle to stop on Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from typing import IO, Any

from redis.exceptions import RedisError

from ..config import Config
from ..logs import NOTICE, set_prefix
from ..metrics import Metrics
from ..procgroup import Engine
from ..scenario import LoadTest, filter_scenarios
from ..signals import install_stop_handlers
from . import keys as K
from .auth import Auth, SecretCheck
from .following import Following
from .link import RedisGone, RedisLink, RedisRefused, Wakeup, cancel_and_wait, run_linked
from .outbox import Outbox, sketches_due
from .protocol import Assignment, ProtocolError, StopRequest, Unauthenticated, as_text, read_run
from .silence import Silence
from .stopkey import read_stop, write_stop

log = logging.getLogger("goose_redis.gaggle.worker")

EXIT_OK, EXIT_ERROR = 0, 1
REJOIN = -1  # the run this Worker waited to start is over: register for the next one


class Worker(Following):
    def __init__(self, config: Config, load_test: LoadTest, link: RedisLink) -> None:
        self.config = config
        self.full_test = load_test
        self.load_test = load_test
        self.link = link
        self.keys = K.Keys(config.gaggle)
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self.host = socket.gethostname()
        self.state = "registered"
        self.assignment: Assignment | None = None
        self.runner: Engine | None = None
        self.metrics = Metrics()
        self.auth = Auth(config.gaggle_secret, config.gaggle, log)  # no secret: signs nothing
        self.secret_check = SecretCheck(self.auth, config.gaggle, config.manager_grace_s)
        self.refused_by: str | None = None  # why this Worker cannot join (its secret does not match)
        self.last_beat: dict[str, Any] = {"hb": 0.0, "users": 0}
        self.outbox = Outbox(link, self.keys, self.id, self.metrics, self.auth)
        self.in_ramp = True
        self.stop_reason: str | None = None
        self.manager_silence = Silence(cap_s=2 * K.HEARTBEAT_S)
        self.manager_seen = False
        self.manager_gone = False
        self.wake = Wakeup(link, self.keys.control)
        self.local_stop = asyncio.Event()
        self.bad_logged: set[str] = set()
        self.request_log: IO[bytes] | None = None
        self.shape_epoch = -1
        self.shape_cause = ""  # the last control command (or re-split) logged
        self.start_at = 0.0
        self._tell_task: asyncio.Task[None] | None = None
        self.stop_msg: StopRequest | None = None  # our stop request, kept in Redis until the run stops
        self.orphaned = False  # a new Manager started another run: ours is over
        self.repaired: set[str] = set()
        self.event_logs = contextlib.ExitStack()  # --transaction-log, --scenario-log, --error-log; closed in run()

    @property
    def label(self) -> str:
        return f"worker {self.assignment.index}" if self.assignment else "a worker"

    # -- phases -----------------------------------------------------------

    async def run(self) -> int:
        install_stop_handlers(self._on_signal, self.pending_tell)
        self.wake.start()
        beat_task = asyncio.create_task(self._beat_loop())
        try:
            code = await self._phases()
            if self.link.fatal is not None:  # whichever task met it: one Error: line, exit 1
                raise self.link.fatal
            return code
        except RedisRefused:
            if self.runner is not None:
                self.runner.stop("Redis refused us")
            raise  # one Error: line, exit 1 (run_linked)
        except RedisGone as exc:
            log.error("%s", exc)
            if self.runner is not None:
                self.runner.stop("Redis is gone")
            return EXIT_ERROR
        finally:
            await cancel_and_wait(beat_task)
            if self._tell_task is not None:
                await asyncio.wait([self._tell_task], timeout=3.0)
            await self.wake.stop()
            await self._unregister()
            if self.request_log is not None:
                self.request_log.close()
            self.event_logs.close()
            self.auth.refusals.log_summary()

    async def _phases(self) -> int:
        await self.link.attempt("registering", self.register)
        log.info("registered as %s in gaggle %r; waiting for the manager", self.id, self.config.gaggle)
        while True:
            code = await self._wait_for_assignment()
            if code is not None:
                return code
            code = await self._wait_for_start()
            if code != REJOIN:
                break
        if code is not None:
            return code
        return await self._run_load()

    def _on_signal(self, signame: str) -> None:
        self.stop_reason = f"{signame} on {self.label}"
        self.local_stop.set()
        if self.runner is not None:
            self.runner.stop(self.stop_reason)
            # Tell the gaggle now, before our own drain: a second Ctrl-C may end us at any moment.
            if self._tell_task is None and not self.manager_gone:
                self._tell_task = asyncio.get_running_loop().create_task(self._request_stop(self.stop_reason))
        self.wake.event.set()

    def pending_tell(self) -> asyncio.Task[None] | None:
        """The stop request on its way to Redis: a second Ctrl-C lets it land before exiting."""
        return self._tell_task

    async def _beat_loop(self) -> None:
        while True:
            try:
                if await self.link.attempt("sending a heartbeat", self.beat) is None and not self.link.up:
                    self.manager_silence.blind()  # Redis did not answer: nobody's silence
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
            return Assignment.from_bytes(raw, self.auth, worker=self.id)
        except Unauthenticated:
            return None  # counted, the first logged: keep waiting for the Manager's own
        except ProtocolError as exc:
            self._warn_once("assign", "ignoring a malformed assignment: %s", exc)
            return None

    async def _wait_for_assignment(self) -> int | None:
        waiting_logged = False
        started = time.monotonic()
        while not self.local_stop.is_set() and self.link.fatal is None:
            a = await self._read_assignment()
            if a is not None:
                if a.refuse is not None:
                    if a.clean:
                        log.log(NOTICE, "the manager told this worker to exit: %s", a.refuse)
                        return EXIT_OK
                    log.error("refused by the manager: %s", a.refuse)
                    return EXIT_ERROR
                self._accept(a)
                return None
            if not waiting_logged and time.monotonic() - started > 3.0 and not self.manager_seen:
                log.log(NOTICE, "no manager in gaggle %r yet; waiting for it", self.config.gaggle)
                waiting_logged = True
            await self.wake.wait(K.POLL_S)
        return EXIT_ERROR if self.refused_by else EXIT_OK

    def _accept(self, a: Assignment) -> None:
        self.assignment = a
        set_prefix(f"[{a.index}] ")
        chosen = filter_scenarios(self.full_test.all_scenarios, a.scenarios)
        self.load_test = LoadTest(chosen, self.full_test.all_scenarios)
        self.manager_silence = Silence(cap_s=2 * K.HEARTBEAT_S)  # judge this run's Manager from now on
        log.info("worker %d connected: %d of %d users (worker %d of %d)", a.index, a.users, a.total_users, a.index,
                 a.workers)  # fmt: skip
        log.info("%d users initialized; waiting for the go-ahead", a.users)
        self.state = "ready"

    async def _read_run(self) -> dict[Any, Any] | None:
        run = await self.link.attempt("reading the run state", lambda: self.link.client.hgetall(self.keys.run))
        if not isinstance(run, dict):
            return None
        try:  # with a secret: only the fields the Manager signed for our run
            return dict(read_run(self.auth, run, self.assignment.run_id if self.assignment else None))
        except Unauthenticated:
            return None

    async def _wait_for_start(self) -> int | None:
        assert self.assignment is not None
        await self.link.attempt("joining the barrier", self._join_barrier)
        await self.link.attempt("joining the barrier", self.beat)  # our (signed) state "ready" with it
        await self.link.attempt(
            "waking the manager", lambda: self.link.client.publish(self.keys.control, K.WAKE_REGISTER)
        )
        while not self.local_stop.is_set():
            if self.link.fatal is not None:
                raise self.link.fatal
            if self._manager_missing():
                return EXIT_ERROR
            run = await self._read_run()
            other = self._other_run(run)
            if other is not None:
                log.log(NOTICE, "run %s is over (a new manager started run %s): registering again",
                        self.assignment.run_id, other)  # fmt: skip
                self.assignment, self.state = None, "registered"
                set_prefix("")
                await self.link.attempt("registering", self.register)
                return REJOIN
            if run and run.get(b"run_id", b"").decode(errors="replace") == self.assignment.run_id:
                state = run.get(b"state", b"").decode(errors="replace")
                if state == K.RUNNING:
                    msg = await self._read_shape()
                    if msg is not None and msg.started_at is not None:
                        self.start_at = msg.started_at
                        self._make_runner(msg)
                        return None
                elif state in (K.STOPPING, K.DONE):
                    log.log(NOTICE, "the run stopped before it started")
                    return EXIT_OK
            await self.wake.wait(K.POLL_S / 2)
        return EXIT_OK

    def _other_run(self, run: dict[Any, Any] | None) -> str | None:
        """The id of another run in `run`: a new Manager started one, so ours is over."""
        rid = as_text(run.get(b"run_id")) if run else ""
        return rid if rid and self.assignment is not None and rid != self.assignment.run_id else None

    async def _join_barrier(self) -> None:
        async with self.link.client.pipeline(transaction=False) as p:
            p.sadd(self.keys.ready, self.id)
            p.expire(self.keys.ready, K.LONG_TTL_S)  # a set this creates never outlives the run
            await p.execute()

    async def _run_load(self) -> int:
        assert self.assignment is not None and self.runner is not None
        runner = self.runner
        run_id = self.assignment.run_id
        self.state = "running"
        local_start = self.link.local(self.start_at)
        runner.recorder.origin = local_start
        log.info("go-ahead received: starting at %s", time.strftime("%H:%M:%S", time.localtime(local_start)))

        def on_reset() -> None:
            self.outbox.cut(run_id, "ramp")
            self.in_ramp = False

        run_task = asyncio.create_task(runner.run(local_start, on_reset))
        watch_task = asyncio.create_task(self._watch(runner))
        flush_task = asyncio.create_task(self._flush_loop(run_id))
        try:
            await run_task
        finally:
            await cancel_and_wait(watch_task, flush_task)
        self.state = "stopping"
        if self.orphaned or self.link.fatal is not None:
            return EXIT_ERROR  # nobody will merge what we would send
        if self.stop_reason and not self.manager_gone and self._tell_task is None:
            await self._request_stop(self.stop_reason)
        self.outbox.cut(run_id, self._phase(), final=True)
        out = self.outbox
        log.info("final metrics: %d requests, %d failures (seq %d)", out.sent_requests, out.sent_failures, out.seq)
        delivered = await self._deliver_final()
        self.state = "done"
        if self.manager_gone:
            return EXIT_ERROR
        return EXIT_OK if delivered else EXIT_ERROR

    def _phase(self) -> str:
        shape = self.runner.shape if self.runner else None
        return "ramp" if self.in_ramp and shape is not None and shape.reset_s is not None else "steady"

    async def _request_stop(self, reason: str) -> None:
        self.stop_msg = msg = StopRequest(self.label, reason, self.link.now())
        run = self.assignment.run_id if self.assignment else ""
        await self.link.attempt("asking the gaggle to stop",
                                lambda: write_stop(self.link, self.keys, msg, self.auth, run))  # fmt: skip
        log.log(NOTICE, "asked the gaggle to stop: %s", reason)

    async def _watch(self, runner: Engine) -> None:
        """Follow the shape; stop on EXIT (the run state, or a stop request from anyone), or a lost Manager."""
        assert self.assignment is not None
        while not runner.stop_event.is_set():
            await self.wake.wait(K.POLL_S)
            if self.link.fatal is not None:
                runner.stop("Redis refused us")
                return
            if self._manager_missing():
                runner.stop("manager went away")
                return
            run = await self._read_run()
            other = self._other_run(run)
            if other is not None:
                self.orphaned = True
                log.error("run %s is over: a new manager started run %s; stopping without sending more metrics",
                          self.assignment.run_id, other)  # fmt: skip
                runner.stop(f"run {self.assignment.run_id} is over")
                return
            await self._follow_shape(run)
            if run and run.get(b"state", b"").decode(errors="replace") in (K.STOPPING, K.DONE):
                reason = run.get(b"stop_reason", b"").decode(errors="replace") or "the manager"
                log.log(NOTICE, "received EXIT (%s)", reason)
                runner.stop(f"EXIT: {reason}")
                return
            got = await self.link.attempt(
                "reading stop requests",
                lambda: read_stop(self.link, self.keys, self.auth, self.assignment.run_id if self.assignment else "",
                                  self.link.now()),
            )  # fmt: skip
            if got is not None and got.junk is not None:
                self._warn_once("stop", "ignoring a malformed stop request: %s", got.junk)
            elif got is not None and got.request is not None:
                log.log(NOTICE, "received EXIT (%s)", got.request.describe())
                runner.stop(f"EXIT: {got.request.describe()}")
                return

    async def _flush_loop(self, run_id: str) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(K.METRICS_INTERVAL_S)
            rounds += 1
            self.outbox.cut(run_id, self._phase(), sketches=sketches_due(self.metrics, rounds))
            await self.outbox.send()

    async def _deliver_final(self) -> bool:
        """Send until the Manager acknowledged the final delta (bounded)."""
        deadline = time.monotonic() + self.config.final_wait_s
        next_look = time.monotonic() + 1.0
        while self.outbox.pending and time.monotonic() < deadline:
            await self.outbox.send()
            if self._manager_missing() or self.link.fatal is not None:
                return False
            await asyncio.sleep(0.1)
            await self.link.attempt("waiting for acknowledgement", self.beat)
            if self.outbox.pending and time.monotonic() > next_look:
                next_look = time.monotonic() + 1.0
                if await self._run_ended_without_us():
                    return False
        if self.outbox.pending:
            log.error("the manager did not acknowledge the final metrics in %.0fs", self.config.final_wait_s)
            return False
        return True

    async def _run_ended_without_us(self) -> bool:
        """The Manager closed the run (or another one started) before acknowledging our final
        delta: it will never come (say, this Worker was frozen past the end)."""
        run = await self._read_run()
        if not run:
            return False
        other = self._other_run(run)
        done = as_text(run.get(b"state")) == K.DONE
        if other is None and not done:
            return False
        await self.link.attempt("waiting for acknowledgement", self.beat)  # the ack is written before `done`
        if not self.outbox.pending:
            return False
        log.error("the run ended without our final metrics (%s): the manager's totals lack them",
                  f"a new manager started run {other}" if other else "it is done")  # fmt: skip
        return True


async def run_worker(config: Config, load_test: LoadTest) -> int:
    return await run_linked(
        config.redis_url, config.redis_deadline_s, lambda link: Worker(config, load_test, link).run()
    )
