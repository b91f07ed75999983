"""The Gaggle Manager: a coordinator plus a merger, meeting Workers only in Redis.

It registers Workers and gives each its share (counts only), opens the start
barrier with a shared start time, watches heartbeats, ends the run (run time,
Ctrl-C, a Worker's stop request, or every Worker finished its iterations),
waits for every Worker's acknowledged final delta, and reports the merge.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ..config import Config
from ..errors import LoadTestError
from ..logs import NOTICE
from ..metrics import Metrics
from ..output import LiveView, finish, print_tables
from ..report.data import RunInfo, build_report, phases_of
from ..scenario import LoadTest
from ..signals import install_stop_handlers
from ..standalone import scenario_users
from . import keys as K
from .allocation import describe_split, split_users
from .ledger import WorkerLedger
from .link import RedisGone, RedisLink, Wakeup, cancel_and_wait, run_linked, shift_series
from .protocol import Assignment, ManagerBeat, MetricsEntry, ProtocolError, Registration, StopRequest, as_text

log = logging.getLogger("goose_redis.gaggle.manager")

START_LEAD_S = 1.0  # Workers poll every 0.25 s: all see the start time before it comes
MAX_LOGGED_BAD = 5
MAX_SKEW_S = 3600.0


@dataclass
class WorkerState:
    id: str
    index: int
    host: str
    users: int
    ledger: WorkerLedger = field(default_factory=WorkerLedger)
    ready: bool = False
    lost: bool = False
    requests: int = 0  # merged, ramp-up included
    failures: int = 0
    ramp: tuple[int, int] = (0, 0)  # the part of those sent before the metrics reset
    reported: tuple[int, int] = (0, 0)  # the Worker's own running totals
    active_users: int = 0
    last_hb: bytes | None = None
    last_change: float = field(default_factory=time.monotonic)

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
            "state": "lost" if self.lost else ("done" if self.ledger.complete else "incomplete"),
        }

    def ramp_summary(self) -> dict[str, Any]:
        """The RAMP-UP tables' view of this Worker: what it sent before the metrics reset."""
        return {**self.summary(False), "requests": self.ramp[0], "failures": self.ramp[1]}


class Manager:
    def __init__(self, config: Config, load_test: LoadTest, link: RedisLink) -> None:
        self.config = config
        self.load_test = load_test
        self.full_hash = load_test.full_hash()
        self.link = link
        self.keys = K.Keys(config.gaggle)
        self.run_id = secrets.token_hex(6)
        self.counts = split_users(config.users, config.expect_workers)
        self.workers: dict[str, WorkerState] = {}
        self.refused: set[str] = set()
        self.bad: set[str] = set()
        self.metrics = Metrics()
        self.ramp = Metrics()
        self.state = K.WAITING
        self.started_at: float | None = None  # gaggle clock
        self.stopping_at: float | None = None
        self.stop_reason = ""
        self.stop_event = asyncio.Event()
        self.bad_entries = 0
        self.last_id: bytes | str = b"0-0"
        self.seen_outages = 0
        self.up_since = time.monotonic()
        self.wake = Wakeup(link, self.keys.control)
        self.ramp_end_s = (config.users - 1) * config.hatch_interval_s
        self.fatal: Exception | None = None

    # -- stopping -----------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        if not self.stop_event.is_set():
            self.stop_reason = reason
            self.stop_event.set()
            self.wake.event.set()

    # -- Redis state ----------------------------------------------------------

    def assignment(self, w: WorkerState) -> Assignment:
        c = self.config
        return Assignment(
            run_id=self.run_id,
            index=w.index,
            workers=c.expect_workers,
            users=w.users,
            total_users=c.users,
            interval_s=c.hatch_interval_s,
            host=c.host,
            timeout_s=c.timeout_s,
            iterations=c.iterations,
            reset_metrics=c.reset_metrics,
            scenarios=c.scenarios,
        )

    async def write_state(self) -> None:
        """The manager heartbeat; it also re-asserts the run state (a restarted Redis forgets it)."""
        c = self.config
        run: dict[Any, Any] = {
            "v": 1,
            "run_id": self.run_id,
            "state": self.state,
            "gaggle": c.gaggle,
            "expect_workers": c.expect_workers,
            "users": c.users,
            "hatch_rate": round(1.0 / c.hatch_interval_s, 6) if c.hatch_interval_s else 0,
            "run_time_s": c.run_time_s if c.run_time_s is not None else "",
            "host": c.host or "",
            "hash": self.full_hash,
            "started_at": self.started_at or "",
            "stop_reason": self.stop_reason,
            "updated_at": self.link.now(),
        }
        async with self.link.client.pipeline(transaction=False) as p:
            p.set(self.keys.manager, ManagerBeat(self.run_id, self.link.now()).to_bytes(), ex=K.HEARTBEAT_TTL_S)
            p.hset(self.keys.run, mapping=run)
            if self.state == K.WAITING:
                for w in self.workers.values():
                    p.set(self.keys.assign(w.id), self.assignment(w).to_bytes(), ex=K.LONG_TTL_S)
            await p.execute()

    async def _beat_loop(self) -> None:
        while True:
            try:
                await self.link.attempt("sending the manager heartbeat", self.write_state)
            except RedisGone as exc:
                log.error("%s", exc)
                self.fatal = exc
                self.request_stop(str(exc))
                return
            if not self.link.up:
                self.up_since = time.monotonic()
            await asyncio.sleep(K.HEARTBEAT_S)

    async def check_other_manager(self) -> None:
        raw = await self.link.client.get(self.keys.manager)
        if raw is None:
            return
        try:
            beat = ManagerBeat.from_bytes(raw)
        except ProtocolError:
            return
        if beat.run_id != self.run_id and self.link.now() - beat.at < K.HEARTBEAT_TTL_S:
            raise LoadTestError(
                f"another manager is running gaggle {self.config.gaggle!r} on this Redis; "
                "use --gaggle NAME to run a second test beside it"
            )

    async def reset(self) -> None:
        known = await self.link.client.hkeys(self.keys.workers)
        stale = [self.keys.assign(as_text(wid)) for wid in known]
        await self.link.client.delete(*self.keys.run_scoped(), *stale)

    # -- registration and the barrier ------------------------------------------

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
        for (wid, raw), is_alive in zip(new, alive, strict=True):
            if not is_alive:
                continue  # a registration left by a dead Worker
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
        taken = {w.index for w in self.workers.values()}
        free = [i for i in range(1, self.config.expect_workers + 1) if i not in taken]
        if self.state != K.WAITING or not free:
            await self.refuse(wid, f"the gaggle already has its {self.config.expect_workers} workers", clean=True)
            log.log(NOTICE, "worker %s from %s is beyond --expect-workers: told to exit", wid, reg.host)
            return
        w = WorkerState(wid, free[0], reg.host, self.counts[free[0] - 1])
        self.workers[wid] = w
        async with self.link.client.pipeline(transaction=False) as p:
            p.set(self.keys.assign(wid), self.assignment(w).to_bytes(), ex=K.LONG_TTL_S)
            p.publish(self.keys.control, K.WAKE_ASSIGN)
            await p.execute()
        log.info("worker %d connected from %s (%s): %d users", w.index, reg.host, wid, w.users)

    async def refuse(self, wid: str, reason: str, clean: bool) -> None:
        self.refused.add(wid)
        a = Assignment(self.run_id, 0, 0, 0, 0, 0.0, None, 0.0, None, False, None, refuse=reason, clean=clean)
        async with self.link.client.pipeline(transaction=False) as p:
            p.set(self.keys.assign(wid), a.to_bytes(), ex=K.LONG_TTL_S)
            p.publish(self.keys.control, K.WAKE_ASSIGN)
            await p.execute()

    async def scan_ready(self) -> None:
        ready = {as_text(m) for m in await self.link.client.smembers(self.keys.ready)}
        for w in sorted(self.workers.values(), key=lambda w: w.index):
            if w.id in ready and not w.ready:
                w.ready = True
                n = sum(1 for x in self.workers.values() if x.ready)
                log.info("worker %d is ready (%d/%d)", w.index, n, self.config.expect_workers)

    async def wait_for_workers(self) -> bool:
        log.info("waiting for %d workers", self.config.expect_workers)
        while not self.stop_event.is_set():
            await self.link.attempt("scanning registrations", self.scan_registrations)
            await self.link.attempt("scanning the barrier", self.scan_ready)
            await self.link.attempt("checking heartbeats", self.check_liveness)
            for w in [w for w in self.workers.values() if w.lost]:
                log.warning("worker %d was lost before the start; its place is free again", w.index)
                del self.workers[w.id]
                self.refused.add(w.id)
            ready = [w for w in self.workers.values() if w.ready]
            if len(ready) == self.config.expect_workers:
                return True
            await self.wake.wait(K.POLL_S / 2)
        return False

    async def start(self) -> None:
        await self.link.sync_clock()
        self.started_at = self.link.now() + START_LEAD_S
        self.state = K.RUNNING
        await self.write_state()
        await self.link.client.publish(self.keys.control, K.WAKE_START)
        log.info(
            "all %d workers ready: the gaggle starts at %s",
            self.config.expect_workers,
            time.strftime("%H:%M:%S", time.localtime(self.link.local(self.started_at))),
        )

    # -- liveness ----------------------------------------------------------------

    async def check_liveness(self) -> None:
        live = [w for w in self.workers.values() if not w.lost and not w.ledger.complete]
        if not live:
            return
        async with self.link.client.pipeline(transaction=False) as p:
            for w in live:
                p.hmget(self.keys.worker(w.id), ["hb", "users"])
            rows = await p.execute()
        now = time.monotonic()
        for w, (hb, users) in zip(live, rows, strict=True):
            if hb is not None and hb != w.last_hb:
                w.last_hb, w.last_change = hb, now
            try:
                w.active_users = int(users) if users is not None else w.active_users
            except ValueError:
                pass
            # Judge only after Redis has been up for a while: a restart forgets heartbeats.
            quiet = now - max(w.last_change, self.up_since)
            if quiet > K.WORKER_LOST_AFTER_S:
                w.lost = True
                log.error(
                    "worker %d (%s) lost: no heartbeat for %.0fs; keeping its %d requests so far",
                    w.index,
                    w.host,
                    quiet,
                    w.requests,
                )
                if self.state == K.RUNNING:
                    if self.config.stop_on_worker_loss:
                        self.request_stop(f"worker {w.index} was lost (--stop-on-worker-loss)")
                    elif all(x.lost for x in self.workers.values()):
                        self.request_stop("every worker was lost")

    # -- metrics -------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while True:
            if self.link.outages != self.seen_outages:
                self.seen_outages = self.link.outages
                self.last_id = b"0-0"  # Redis may have restarted: read it all again, the ledger dedups
            resp: Any = await self.link.attempt(
                "reading metrics",
                lambda: self.link.client.xread({self.keys.metrics: self.last_id}, count=200, block=K.XREAD_BLOCK_MS),
            )
            if not resp:
                if not self.link.up:
                    await asyncio.sleep(0.5)
                continue
            changed: set[str] = set()
            for _stream, entries in resp:
                for entry_id, fields in entries:
                    self.last_id = entry_id
                    wid = self.handle_entry(fields)
                    if wid is not None:
                        changed.add(wid)
            if changed:
                await self.link.attempt("acknowledging metrics", lambda ids=changed: self._ack(ids))  # type: ignore[misc]

    async def _ack(self, changed: set[str]) -> None:
        await self.link.client.hset(
            self.keys.acks, mapping={wid: self.workers[wid].ledger.watermark for wid in changed}
        )

    def handle_entry(self, fields: dict[bytes, bytes]) -> str | None:
        """Merge one stream entry; never raises, so one bad entry cannot stop intake."""
        try:
            entry = MetricsEntry.from_fields(fields)
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
        w = self.workers.get(entry.worker_id)
        if w is None:
            self.bad_entries += 1
            log.warning("ignoring metrics from unknown worker %r", entry.worker_id)
            return None
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
        lo = (self.link.local(self.started_at) if self.started_at else now) - MAX_SKEW_S
        return all(lo <= key <= now + MAX_SKEW_S for key in bucket_keys)

    # -- the run ---------------------------------------------------------------------

    async def run(self) -> int:
        install_stop_handlers(lambda signame: self.request_stop(f"{signame} on the manager"))
        await self.check_other_manager()
        await self.reset()
        await self.write_state()
        c = self.config
        log.info("gaggle %r on Redis %s (run %s)", c.gaggle, self.link.safe_url, self.run_id)
        for line in describe_split(c.users, c.expect_workers):
            log.info("%s", line)
        self.wake.start()
        beat = asyncio.create_task(self._beat_loop())
        reader = asyncio.create_task(self._read_loop())
        view = LiveView(c, self.ramp_end_s)
        try:
            if await self.wait_for_workers():
                await self.start()
                await self.run_phase(view)
            await self.stop_phase()
            if self.started_at is not None:
                self.tick(view, tables=False)  # the final totals, for the line left on screen
        finally:
            view.close()
            await cancel_and_wait(beat, reader)
            await self.wake.stop()
        if self.fatal is not None:
            raise self.fatal
        if self.started_at is None:
            log.log(NOTICE, "the gaggle never started: %s", self.stop_reason)
            return 0
        ramp, final = self.reports(time.time())
        if ramp is not None and not c.quiet:
            print_tables(ramp, "=== RAMP-UP METRICS ===")
        finish(final, c)
        await self.link.attempt("closing the run", self.close_run)
        return 0

    def marks(self, now: float) -> tuple[float, float | None, float | None, bool]:
        """(start, ramp done, stopping, metrics reset in effect) in local time at ``now``."""
        assert self.started_at is not None
        start = self.link.local(self.started_at)
        ramp_done = start + self.ramp_end_s if now >= start + self.ramp_end_s else None
        stopping = self.link.local(self.stopping_at) if self.stopping_at else None
        reset = self.config.reset_metrics and ramp_done is not None and (stopping is None or ramp_done < stopping)
        return start, ramp_done, stopping, bool(reset)

    def info(self, now: float) -> RunInfo:
        c = self.config
        start, ramp_done, stopping, reset = self.marks(now)
        return RunInfo(
            mode="gaggle",
            started_at=start,
            ended_at=now,
            measured_from=ramp_done if reset and ramp_done else start,
            users=c.users,
            host=c.host,
            hatch_rate=1.0 / c.hatch_interval_s if c.hatch_interval_s else None,
            run_time_s=c.run_time_s,
            iterations=c.iterations,
            metrics_reset=bool(reset),
            phases=phases_of(start, ramp_done, stopping, now),
            workers=[w.summary(reset) for w in sorted(self.workers.values(), key=lambda w: w.index)],
            scenario_users=scenario_users(self.load_test, list(range(c.users))),
        )

    def reports(self, now: float) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """(the ramp-up report if the metrics were reset, the final report)."""
        info = self.info(now)
        ramp = None
        if info.metrics_reset and not self.ramp.is_empty():
            ramp_info = replace(
                info, ended_at=info.measured_from, measured_from=info.started_at, phases=info.phases[:1],
                workers=[w.ramp_summary() for w in sorted(self.workers.values(), key=lambda w: w.index)],
            )  # fmt: skip
            ramp = build_report(self.ramp, self.load_test, ramp_info)
        return ramp, build_report(self.measured(info.metrics_reset), self.load_test, info)

    def measured(self, reset: bool) -> Metrics:
        """The rows the report shows: the steady phase after a reset, else everything."""
        if reset:
            return self.metrics
        target = Metrics(series=self.metrics.series)  # nothing was reset: the ramp belongs in the totals
        target.merge(self.metrics, with_series=False)
        target.merge(self.ramp, with_series=False)
        return target

    async def run_phase(self, view: LiveView) -> None:
        assert self.started_at is not None
        c = self.config
        end_at = self.started_at + self.ramp_end_s + c.run_time_s if c.run_time_s is not None else None
        while not self.stop_event.is_set():
            await self.wake.wait(K.POLL_S)
            # Workers that come after the start are told to exit (the gaggle is full).
            await self.link.attempt("scanning registrations", self.scan_registrations)
            await self.link.attempt("checking heartbeats", self.check_liveness)
            await self.link.attempt("reading stop requests", self.check_stop_request)
            workers = list(self.workers.values())
            if c.iterations is not None and all(w.lost or w.ledger.final_seq is not None for w in workers):
                self.request_stop(f"every user ran {c.iterations} iteration(s)")
            if end_at is not None and self.link.now() >= end_at:
                self.request_stop("run time elapsed")
            self.tick(view)

    def tick(self, view: LiveView, tables: bool = True) -> None:
        assert self.started_at is not None
        now = time.time()
        # The figures the report will show: after the metrics reset, the steady phase only.
        reset = self.marks(now)[3]
        req, fail = self.metrics.total_requests()
        if not reset:
            ramp_req, ramp_fail = self.ramp.total_requests()
            req, fail = req + ramp_req, fail + ramp_fail
        view.tick(
            now,
            users=sum(w.active_users for w in self.workers.values() if not w.lost),
            elapsed_s=now - self.link.local(self.started_at),
            series=self.metrics.series,
            requests=req,
            failures=fail,
            workers=sum(1 for w in self.workers.values() if not w.lost),
            report=(lambda: build_report(self.measured(reset), self.load_test, self.info(now))) if tables else None,
        )

    async def check_stop_request(self) -> None:
        raw = await self.link.client.get(self.keys.stop)
        if raw is None:
            return
        try:
            req = StopRequest.from_bytes(raw)
        except ProtocolError as exc:
            if "stop" not in self.bad:
                self.bad.add("stop")
                log.warning("ignoring a malformed stop request: %s", exc)
            return
        self.request_stop(f"{req.reason} (asked by {req.by})")

    async def stop_phase(self) -> None:
        self.stopping_at = self.link.now()
        self.state = K.STOPPING
        await self.link.attempt("broadcasting EXIT", self._broadcast_exit)
        if self.started_at is None:
            self.state = K.DONE
            await self.link.attempt("closing the run", self.write_state)
            return
        log.log(NOTICE, "stopping the gaggle: %s", self.stop_reason)
        deadline = time.monotonic() + self.config.final_wait_s
        while time.monotonic() < deadline:
            waiting = [w for w in self.workers.values() if not w.lost and not w.ledger.complete]
            if not waiting:
                break
            await self.link.attempt("checking heartbeats", self.check_liveness)
            await asyncio.sleep(0.2)
        for w in self.workers.values():
            if not w.lost and not w.ledger.complete:
                log.error("no final metrics from worker %d within %.0fs: its totals may be short",
                          w.index, self.config.final_wait_s)  # fmt: skip
            elif w.ledger.complete and (w.requests, w.failures) != w.reported:
                log.error("worker %d: merged %s but it counted %s", w.index, (w.requests, w.failures), w.reported)
        if self.bad_entries:
            log.warning("ignored %d malformed or foreign metrics entries", self.bad_entries)
        self.state = K.DONE

    async def _broadcast_exit(self) -> None:
        await self.write_state()
        await self.link.client.publish(self.keys.control, K.WAKE_EXIT)

    async def close_run(self) -> None:
        async with self.link.client.pipeline(transaction=False) as p:
            p.hset(self.keys.run, mapping={"state": K.DONE, "ended_at": self.link.now()})
            for key in self.keys.run_scoped():
                p.expire(key, K.LONG_TTL_S)
            p.delete(self.keys.manager, *[self.keys.assign(w) for w in self.workers])
            await p.execute()


async def run_manager(config: Config, load_test: LoadTest) -> int:
    return await run_linked(
        config.redis_url, config.redis_deadline_s, lambda link: Manager(config, load_test, link).run()
    )
