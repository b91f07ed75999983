"""The Gaggle Manager: a coordinator plus a merger, meeting Workers only in Redis.

The jobs live in their own modules: ``roster`` (registration, the barrier, liveness),
``steering`` (the load shape every Worker follows), ``merge`` (the metrics stream,
exactly once), ``checkpoint`` (the state a restarted Manager adopts; acknowledgements
and trimming follow it), ``resume`` (adopt a run in progress, or start cleanly). This
module runs them in order: wait at the barrier, start the gaggle at a shared instant,
steer it, end it (run time, Ctrl-C, a Worker's stop request, or every Worker done with
its iterations), wait for every Worker's acknowledged final delta, and report the merge.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import replace
from typing import Any

from ..config import Config
from ..logs import NOTICE
from ..output import LiveView, finish, print_tables
from ..report.data import RunInfo, build_report, phases_of
from ..scenario import LoadTest
from ..signals import install_stop_handlers
from ..standalone import hatch_rate_of, scenario_users, shaping_info
from ..thresholds import watch_for
from . import keys as K
from .allocation import describe_split
from .auth import Auth
from .checkpoint import Checkpointer
from .control import ControlDesk
from .link import RedisGone, RedisLink, Wakeup, cancel_and_wait, is_wrong_type, run_linked
from .merge import Merger
from .protocol import ManagerBeat, sign_run
from .resume import begin, fingerprint, still_in_charge
from .roster import Roster
from .steering import Steering
from .stopkey import read_stop

log = logging.getLogger("goose_redis.gaggle.manager")

START_LEAD_S = 1.0  # Workers poll every 0.25 s: all see the start time before it comes

class Manager:
    def __init__(self, config: Config, load_test: LoadTest, link: RedisLink) -> None:
        self.config = config
        self.load_test = load_test
        self.link = link
        self.keys = K.Keys(config.gaggle)
        self.run_id = secrets.token_hex(6)
        self.owner = secrets.token_hex(4)  # this process; a restarted Manager keeps the run id, not this
        self.fingerprint = fingerprint(config, load_test)
        shape = config.shape()
        self.auth = Auth(config.gaggle_secret, config.gaggle, log)  # no secret: signs nothing
        self.roster = Roster(config, link, self.run_id, load_test.full_hash(), shape.peak, self.auth)
        self.steering = Steering(link, self.keys, self.run_id, shape, self.auth)
        self.steering.write_run = self.write_state  # a published shape's epoch goes into the (signed) run hash
        self.merger = Merger(link, self.roster, self.run_id, lambda: self.steering.started_at)
        self.checkpoints = Checkpointer(self)
        self.deposed = False  # another Manager took the gaggle over while this one was stalled
        self.state = K.WAITING
        self.stopping_at: float | None = None
        self.stop_reason = ""
        self.stop_event = asyncio.Event()
        self.wake = Wakeup(link, self.keys.control)
        self.fatal: Exception | None = None
        self.reset_logged = False
        self.watch = watch_for(config)  # --threshold-abort
        self.desk = ControlDesk(self)  # control commands and the dashboard's snapshot

    @property
    def started_at(self) -> float | None:
        return self.steering.started_at

    def adopt_run_id(self, run_id: str) -> None:
        self.run_id = self.roster.run_id = self.steering.run_id = self.merger.run_id = run_id

    def request_stop(self, reason: str) -> None:
        if not self.stop_event.is_set():
            self.stop_reason = reason
            self.stop_event.set()
            self.wake.event.set()

    # -- Redis state ----------------------------------------------------------

    async def write_state(self) -> None:
        """The manager heartbeat; it also re-asserts the run state and pushes every run key's
        TTL forward (a restarted Redis forgets them; a crashed Manager leaves them to expire).

        Each command's reply is checked on its own: a key of the wrong type under ``run`` is
        deleted and written again (this Manager owns it), and never costs the heartbeat."""
        if not await still_in_charge(self):
            return
        c = self.config
        shape = self.steering.shape
        run: dict[Any, Any] = {
            "v": 2,
            "run_id": self.run_id,
            "state": self.state,
            "gaggle": c.gaggle,
            "expect_workers": c.expect_workers,
            "users": shape.peak,
            "hatch_rate": round(shape.hatch_rate, 6),
            "run_time_s": c.run_time_s if c.run_time_s is not None else "",
            "host": c.host or "",
            "hash": self.roster.full_hash,
            "fingerprint": self.fingerprint,
            "started_at": self.started_at or "",
            "stop_reason": self.stop_reason,
            "epoch": self.steering.epoch,  # Workers read the (large) shape key only when this grows
            "updated_at": self.link.now(),
        }
        beat = ManagerBeat(self.run_id, self.link.now(), self.owner)
        signed_run = sign_run(self.auth, self.run_id, run)  # with a secret: signed fields and a MAC
        async with self.link.client.pipeline(transaction=False) as p:
            p.set(self.keys.manager, beat.to_bytes(self.auth), ex=K.HEARTBEAT_TTL_S)
            p.hset(self.keys.run, mapping=signed_run)
            p.set(self.keys.shape, self.steering.message().to_bytes(self.auth), ex=K.LONG_TTL_S)
            if self.state == K.WAITING:
                for w in self.roster.workers.values():
                    p.set(self.keys.assign(w.id), self.roster.assignment(w).to_bytes(self.auth, worker=w.id),
                          ex=K.LONG_TTL_S)  # fmt: skip
            for key in self.keys.run_scoped():
                p.expire(key, K.LONG_TTL_S)
            res = self.link.replies("sending the manager heartbeat", await p.execute(raise_on_error=False))
        if is_wrong_type(res[1]):
            await self.link.rewrite_hash(self.keys.run, signed_run, K.LONG_TTL_S, "the run key")

    async def _beat_loop(self) -> None:
        while True:
            try:
                await self.link.attempt("sending the manager heartbeat", self.write_state)
            except RedisGone as exc:
                log.error("%s", exc)
                self.fatal = exc
                self.request_stop(str(exc))
                return
            await asyncio.sleep(K.HEARTBEAT_S)

    def check_fatal(self) -> None:
        """A task found that Redis refuses us for good (an ACL): stop, and say so at the end."""
        if self.link.fatal is not None and self.fatal is None:
            self.fatal = self.link.fatal
            self.request_stop(str(self.link.fatal))

    # -- the barrier and the start ---------------------------------------------

    async def wait_for_workers(self) -> bool:
        log.info("waiting for %d workers", self.config.expect_workers)
        roster = self.roster
        while not self.stop_event.is_set():
            self.check_fatal()
            admitted = len(roster.workers)
            await self.link.attempt("scanning registrations", roster.scan_registrations)
            if len(roster.workers) != admitted:
                await self.checkpoints.flush()  # a Manager restarted now keeps these Workers
            await self.link.attempt("scanning the barrier", roster.scan_ready)
            await roster.check_liveness()
            roster.drop_lost_before_start()
            await self.desk.poll()
            if roster.all_ready() and not self.desk.waiting_for_start():
                return True
            await self.desk.publish_snapshot()
            await self.wake.wait(K.POLL_S / 2)
        return False

    async def start(self) -> None:
        await self.link.sync_clock()
        self.roster.open = False
        self.steering.started_at = self.link.now() + START_LEAD_S
        self.steering.set_slots(self.roster.slot_holders())
        self.state = K.RUNNING
        await self.write_state()  # the shape is written with the run state: a Worker that sees one sees both
        await self.checkpoints.flush()
        await self.link.client.publish(self.keys.control, K.WAKE_START)
        at = time.strftime("%H:%M:%S", time.localtime(self.link.local(self.steering.started_at)))
        log.info("all %d workers ready: the gaggle starts at %s", self.config.expect_workers, at)
        log.log(NOTICE, "gaggle distributed load test started")

    # -- the run -----------------------------------------------------------------

    async def run(self) -> int:
        install_stop_handlers(lambda signame: self.request_stop(f"{signame} on the manager"))
        await begin(self)
        await self.write_state()
        await self.checkpoints.flush()
        c = self.config
        log.info("gaggle %r on Redis %s (run %s)", c.gaggle, self.link.safe_url, self.run_id)
        if self.auth.enabled:
            log.log(NOTICE, "gaggle %r is authenticated: every message is signed (--gaggle-secret)", c.gaggle)
        else:
            log.log(NOTICE, "gaggle %r is unauthenticated: anyone who can write goose:%s:* in Redis can steer it "
                    "(see docs/deploy.md)", c.gaggle, c.gaggle)  # fmt: skip
        for line in describe_split(self.steering.shape.peak, c.expect_workers):
            log.info("%s", line)
        self.wake.start()
        beat = asyncio.create_task(self._beat_loop())
        reader = asyncio.create_task(self.merger.read_loop())
        committer = asyncio.create_task(self.checkpoints.loop())
        view = LiveView(c, self.steering.shape.end_s)
        try:
            if self.state == K.WAITING and await self.wait_for_workers():
                view.config, view.planned_s = self.config, self.steering.shape.end_s  # commands before the start
                await self.start()
            if self.state == K.RUNNING:
                await self.run_phase(view)
            if not self.deposed:
                await self.stop_phase()
            if self.started_at is not None and not self.deposed:
                self.tick(view, tables=False)  # the final totals, for the line left on screen
        finally:
            view.close()
            await cancel_and_wait(beat, reader, committer)
            await self.wake.stop()
        self.check_fatal()
        if self.fatal is not None:
            raise self.fatal
        if self.started_at is None:
            log.log(NOTICE, "the gaggle never started: %s", self.stop_reason)
            await self.desk.publish_final(None)
            await self.link.attempt("closing the run", self.close_run)
            return 0
        now = time.time()
        log.info("printing metrics after %.0f seconds...", now - self.link.local(self.started_at))
        ramp, final = self.reports(now)
        if ramp is not None and not c.quiet:
            print_tables(ramp, "=== RAMP-UP METRICS ===")
        code = finish(final, c, aborted=self.watch.fired if self.watch else None)
        await self.desk.publish_final(final)
        await self.link.attempt("closing the run", self.close_run)
        return code

    def marks(self, now: float) -> tuple[float, float | None, float | None, bool]:
        """(start, ramp done, stopping, metrics reset in effect) in local time at ``now``."""
        assert self.started_at is not None
        shape = self.steering.shape
        start = self.link.local(self.started_at)
        ramp_s = shape.reset_s if shape.reset_s is not None else (shape.segments[0].finish if shape.segments else 0.0)
        ramp_done = start + ramp_s if now >= start + ramp_s else None
        stopping = self.link.local(self.stopping_at) if self.stopping_at else None
        reset = shape.reset_s is not None and ramp_done is not None and (stopping is None or ramp_done < stopping)
        return start, ramp_done, stopping, bool(reset)

    def info(self, now: float) -> RunInfo:
        c = self.config
        start, ramp_done, stopping, reset = self.marks(now)
        shape = self.steering.shape
        return RunInfo(
            mode="gaggle",
            started_at=start,
            ended_at=now,
            measured_from=ramp_done if reset and ramp_done else start,
            users=shape.peak,
            host=c.host,
            hatch_rate=hatch_rate_of(c),
            run_time_s=c.run_time_s,
            iterations=c.iterations,
            metrics_reset=bool(reset),
            phases=phases_of(start, ramp_done, stopping, now),
            workers=[w.summary(reset) for w in self.roster.by_index()],
            scenario_users=scenario_users(self.load_test, shape.peak),
            problems=self.problems(),
            events=list(self.desk.events),
            **shaping_info(c, shape, now - start),
        )

    def problems(self) -> list[str]:
        """Why the merged totals are known to be incomplete (empty: they are exact)."""
        out = []
        for w in self.roster.by_index():
            if not w.ledger.complete:
                why = "was lost" if w.lost else "sent no final metrics"
                out.append(f"worker {w.index} ({w.host}) {why}: its last deltas are missing")
            elif (w.requests, w.failures) != w.reported:
                out.append(f"worker {w.index}: merged {w.requests} requests but it counted {w.reported[0]}")
        return out

    def reports(self, now: float) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """(the ramp-up report if the metrics were reset, the final report)."""
        info = self.info(now)
        ramp = None
        merger = self.merger
        if info.metrics_reset and not merger.ramp.is_empty():
            ramp_workers = [{**w, "requests": w["ramp_requests"], "failures": w["ramp_failures"]} for w in info.workers]
            ramp_info = replace(info, ended_at=info.measured_from, measured_from=info.started_at,
                                phases=info.phases[:1], workers=ramp_workers, metrics_reset=False)  # fmt: skip
            ramp = build_report(merger.ramp, self.load_test, ramp_info)
        return ramp, build_report(merger.measured(info.metrics_reset), self.load_test, info)

    async def run_phase(self, view: LiveView) -> None:
        assert self.started_at is not None
        c = self.config
        while not self.stop_event.is_set():
            await self.wake.wait(K.POLL_S)
            await self.desk.poll()
            self.check_fatal()
            # Workers that come after the start are told to exit (the gaggle is full).
            await self.link.attempt("scanning registrations", self.roster.scan_registrations)
            if await self.roster.check_liveness():
                await self.resplit()
            if any(w.lost for w in self.roster.workers.values()):
                await self.link.attempt("forgetting lost workers", self.roster.forget_lost)
            await self.link.attempt("reading stop requests", self.check_stop_request)
            workers = list(self.roster.workers.values())
            if c.iterations is not None and all(w.lost or w.ledger.final_seq is not None for w in workers):
                self.request_stop(f"every user ran {c.iterations} iteration(s)")
            shape = self.steering.shape
            elapsed = self.steering.elapsed()
            if shape.end_s is not None and elapsed >= shape.end_s:
                self.request_stop("run time elapsed")
            self.log_reset(elapsed)
            view.planned_s = shape.end_s  # a command may have moved the end
            self.tick(view)
            await self.desk.publish_snapshot()
            if self.watch is not None and not self.stop_event.is_set():  # --threshold-abort
                now = time.time()
                live = lambda t=now: build_report(self.merger.measured(self.marks(t)[3]), self.load_test, self.info(t))  # noqa: E731
                if reason := self.watch.poll(now, live):
                    self.request_stop(reason)

    async def resplit(self) -> None:
        """A Worker was lost or is back: move the users to the Workers that hold slots now."""
        lost = [w for w in self.roster.workers.values() if w.lost]
        if lost and self.config.stop_on_worker_loss:
            self.request_stop(f"worker {lost[0].index} was lost (--stop-on-worker-loss)")
            return
        holders = self.roster.slot_holders()
        if not holders and self.roster.workers:
            self.request_stop("every worker was lost")
            return
        if self.steering.set_slots(holders, cause=f"users re-split over {len(holders)} worker(s)"):
            log.log(NOTICE, "users re-split over %d worker(s)", len(holders))
            await self.link.attempt("publishing the shape", self.steering.publish)

    def log_reset(self, elapsed: float) -> None:
        reset_s = self.steering.shape.reset_s
        if not self.reset_logged and reset_s is not None and elapsed >= reset_s:
            self.reset_logged = True
            log.log(NOTICE, "all %d users launched: metrics reset", self.steering.shape.users_at(elapsed))

    def tick(self, view: LiveView, tables: bool = True) -> None:
        assert self.started_at is not None
        now = time.time()
        # The figures the report will show: after the metrics reset, the steady phase only.
        reset = self.marks(now)[3]
        req, fail = self.merger.totals(reset)
        view.tick(
            now,
            users=sum(w.active_users for w in self.roster.workers.values() if not w.lost),
            elapsed_s=now - self.link.local(self.started_at),
            series=self.merger.metrics.series,
            requests=req,
            failures=fail,
            workers=sum(1 for w in self.roster.workers.values() if not w.lost),
            report=(lambda: build_report(self.merger.measured(reset), self.load_test, self.info(now)))
            if tables
            else None,
        )

    async def check_stop_request(self) -> None:
        got = await read_stop(self.link, self.keys, self.auth, self.run_id, self.link.now())
        if got.wrong_type:  # the run's key: delete it, so a Worker's request can land there
            await self.link.client.delete(self.keys.stop)
        elif got.junk is not None:
            if "stop" not in self.roster.bad:
                self.roster.bad.add("stop")
                log.warning("ignoring a malformed stop request: %s", got.junk)
        elif got.request is not None:
            self.request_stop(got.request.describe())

    async def stop_phase(self) -> None:
        self.stopping_at = self.stopping_at or self.link.now()  # an adopted run keeps its own
        self.state = K.STOPPING
        await self.link.attempt("broadcasting EXIT", self._broadcast_exit)
        if self.started_at is None:
            self.state = K.DONE
            await self.link.attempt("closing the run", self.write_state)
            return
        log.log(NOTICE, "stopping the gaggle: %s", self.stop_reason)
        deadline = time.monotonic() + self.config.final_wait_s
        exited: set[str] = set()
        while time.monotonic() < deadline:
            self.check_fatal()
            if self.fatal is not None:
                break
            for w in self.roster.by_index():
                if w.ledger.complete and w.id not in exited:
                    exited.add(w.id)
                    log.info("worker %d exited", w.index)
            waiting = [w for w in self.roster.workers.values() if not w.lost and not w.ledger.complete]
            if not waiting:
                break
            await self.roster.check_liveness()
            await self.desk.poll()  # refused: the run is over
            await self.desk.publish_snapshot()
            await asyncio.sleep(0.2)
        await self.checkpoints.flush()  # acknowledge the final deltas: the Workers wait for that
        if all(w.ledger.complete for w in self.roster.workers.values()):
            log.info("all workers have exited")
        for w in self.roster.workers.values():
            if not w.lost and not w.ledger.complete:
                log.error("no final metrics from worker %d within %.0fs: its totals may be short",
                          w.index, self.config.final_wait_s)  # fmt: skip
            elif w.ledger.complete and (w.requests, w.failures) != w.reported:
                log.error("worker %d: merged %s but it counted %s", w.index, (w.requests, w.failures), w.reported)
        if self.merger.bad_entries:
            log.warning("ignored %d malformed or foreign metrics entries", self.merger.bad_entries)
        self.auth.refusals.log_summary()
        self.state = K.DONE

    async def _broadcast_exit(self) -> None:
        await self.write_state()
        if not self.deposed:
            await self.link.client.publish(self.keys.control, K.WAKE_EXIT)

    async def close_run(self) -> None:
        if not await still_in_charge(self):
            return
        await self.roster.forget_lost()
        async with self.link.client.pipeline(transaction=False) as p:
            done = {"run_id": self.run_id, "state": K.DONE, "stop_reason": self.stop_reason,
                    "ended_at": self.link.now()}  # fmt: skip
            p.hset(self.keys.run, mapping=sign_run(self.auth, self.run_id, done))
            for key in self.keys.run_scoped():
                p.expire(key, K.LONG_TTL_S)
            # The run is over: nothing to adopt any more (and it may hold a long series).
            p.delete(self.keys.manager, self.keys.checkpoint, *[self.keys.assign(w) for w in self.roster.workers])
            self.link.replies("closing the run", await p.execute(raise_on_error=False))


async def run_manager(config: Config, load_test: LoadTest) -> int:
    return await run_linked(
        config.redis_url, config.redis_deadline_s, lambda link: Manager(config, load_test, link).run()
    )
