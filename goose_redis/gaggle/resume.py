"""A Manager starting where another left off: adopt the run in progress, or start cleanly.

A Manager that starts while ``run`` says a run is in progress (waiting, running or
stopping) and whose Manager heartbeat is gone has two choices:

- **adopt** it (the default when it can, ``--resume`` to insist): the same test (the
  ``fingerprint`` of the load test and of every option that shapes the run matches), a
  checkpoint of that run in Redis, and at least one of its Workers alive. The new Manager
  takes the run id, the shape, the start time, the roster, the merged totals and the
  ledgers from the checkpoint, reads the stream from the last id the checkpoint covers,
  and the Workers, which never stopped, carry on under it. The run ends at its planned
  time with exact totals.
- **start fresh** (``--no-resume``, or when it cannot adopt): a new run id. The old run's
  Workers see another run id in ``run`` and stop at once; their registrations carry
  their run id, so this Manager never takes them in.

Adopting is the default because restarting a crashed Manager with the same command line
almost always means "finish the test": the Workers are still loading the target, and a
fresh run would throw their work away. A different test never adopts.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from ..config import Config
from ..errors import LoadTestError
from ..logs import NOTICE
from ..scenario import LoadTest
from . import keys as K
from .auth import Auth
from .checkpoint import Checkpoint, load_checkpoint
from .link import RedisLink, is_wrong_type
from .protocol import ManagerBeat, ProtocolError, ShapeMessage, as_text, read_run

if TYPE_CHECKING:
    from .manager import Manager

log = logging.getLogger("goose_redis.gaggle.manager")

STALE_AFTER_S = 3.0  # a live Manager's heartbeat changes every second
IN_PROGRESS = (K.WAITING, K.RUNNING, K.STOPPING)


def fingerprint(config: Config, load_test: LoadTest) -> str:
    """The test and every option that shapes the run: two Managers with the same one run the same test."""
    c = config
    shape = ShapeMessage.of("", 0, None, c.shape(), [])
    doc = {
        "hash": load_test.full_hash(), "shape": orjson.loads(shape.to_bytes()), "workers": c.expect_workers,
        "host": c.host, "iterations": c.iterations, "scenarios": c.scenarios, "timeout": c.timeout_s,
        "co": c.co_mitigation,
    }  # fmt: skip
    doc["shape"].pop("v", None)
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


async def read_beat(link: RedisLink, keys: K.Keys, auth: Auth | None = None) -> ManagerBeat | None:
    """The Manager heartbeat there is, if any (junk, a key of the wrong type, or with a secret
    one its MAC does not cover: none, so a forged heartbeat cannot depose a Manager)."""
    try:
        raw = await link.client.get(keys.manager)
    except Exception as exc:
        if is_wrong_type(exc):
            return None
        raise
    try:
        return ManagerBeat.from_bytes(raw, auth) if raw is not None else None
    except ProtocolError:
        return None


async def wait_out_previous_manager(link: RedisLink, keys: K.Keys, gaggle: str, auth: Auth | None = None) -> None:
    """Return once no other Manager is alive on the gaggle; refuse to start if one is.

    A heartbeat that is there says little by itself: it lives 5 s after its Manager was
    killed. A live Manager's changes every second, so watch it for a moment."""
    first: float | None = None
    deadline = time.monotonic() + STALE_AFTER_S + 1.0
    while time.monotonic() < deadline:
        beat = await read_beat(link, keys, auth)
        if beat is None or link.now() - beat.at > STALE_AFTER_S:
            return
        if first is not None and beat.at != first:
            raise LoadTestError(
                f"another manager is running gaggle {gaggle!r} on this Redis; "
                "use --gaggle NAME to run a second test beside it"
            )
        first = beat.at
        await asyncio.sleep(0.25)


async def decide(link: RedisLink, keys: K.Keys, config: Config, fp: str, auth: Auth | None = None) -> Checkpoint | None:
    """The checkpoint of the run to adopt, or None for a fresh run (saying why, when a run is left behind)."""
    g = config.gaggle
    try:
        run: dict[Any, Any] = await link.client.hgetall(keys.run)
    except Exception as exc:
        if not is_wrong_type(exc):
            raise
        run = {}
    run_id, state = as_text(run.get(b"run_id")), as_text(run.get(b"state"))
    if not run_id or state not in IN_PROGRESS:
        if config.resume == "always":
            raise LoadTestError(f"--resume: there is no run in progress in gaggle {g!r} to resume")
        return None
    if config.resume == "never":
        log.log(NOTICE, "--no-resume: starting a fresh run; run %s (%s) is over and its workers stop", run_id, state)
        return None
    why_not = None
    cp = await load_checkpoint(link, keys, auth)
    if cp is None or cp.run_id != run_id:
        why_not = "it left no readable checkpoint"
    elif cp.fingerprint != fp:
        why_not = "this is a different test (the load test or the options that shape the run differ)"
    else:
        ids = [w.id for w in cp.workers if not w.ledger.complete]
        alive = await _alive(link, keys, ids)
        if not alive:
            why_not = "none of its workers is alive"
    if why_not is not None:
        if config.resume == "always":
            raise LoadTestError(f"--resume: cannot resume run {run_id} of gaggle {g!r}: {why_not}")
        log.log(NOTICE, "not resuming run %s: %s; starting a fresh run (its workers stop)", run_id, why_not)
        return None
    assert cp is not None
    log.log(NOTICE, "resuming run %s (%s, %d of %d workers alive) from its checkpoint", run_id, state,
            len(alive), len(cp.workers))  # fmt: skip
    return cp


async def _alive(link: RedisLink, keys: K.Keys, ids: list[str]) -> list[str]:
    if not ids:
        return []
    async with link.client.pipeline(transaction=False) as p:
        for wid in ids:
            p.exists(keys.heartbeat(wid))
        found = await p.execute()
    return [wid for wid, n in zip(ids, found, strict=True) if n]


async def adopt(m: Manager, cp: Checkpoint) -> None:
    """Take over the run of ``cp``: its id, shape, start, roster, merged totals and ledgers."""
    m.adopt_run_id(cp.run_id)
    m.state, m.stopping_at, m.stop_reason = cp.state, cp.stopping_at, cp.stop_reason
    st = m.steering
    st.shape, st.started_at, st.slots = cp.shape.shape(), cp.shape.started_at, list(cp.shape.workers)
    # The old Manager may have published a later epoch than it checkpointed: go past both,
    # so the Workers take the shape from us (they ignore an epoch they have seen).
    st.epoch = max(cp.shape.epoch, await _published_epoch(m, cp.run_id)) + 1
    m.roster.workers = {w.id: w for w in cp.workers}
    m.roster.open = cp.state == K.WAITING
    m.merger.metrics, m.merger.ramp, m.merger.last_id = cp.metrics, cp.ramp, cp.last_id.encode()
    if cp.state == K.STOPPING:
        m.stop_event.set()
    for w in m.roster.by_index():
        log.info("worker %d (%s): %d requests merged so far%s", w.index, w.host, w.requests,
                 " (lost)" if w.lost else "")  # fmt: skip


async def _published_epoch(m: Manager, run_id: str) -> int:
    try:
        raw = await m.link.client.get(m.keys.shape)
        msg = ShapeMessage.from_bytes(raw) if raw is not None else None
    except Exception:  # junk or a key of the wrong type: nothing was published that counts
        return 0
    return msg.epoch if msg is not None and msg.run_id == run_id else 0


async def begin(m: Manager) -> None:
    """Wait out a previous Manager; adopt its run, or clear the gaggle's keys for a fresh one."""
    await wait_out_previous_manager(m.link, m.keys, m.config.gaggle, m.auth)
    adopted = await decide(m.link, m.keys, m.config, m.fingerprint, m.auth)
    if adopted is not None:
        await adopt(m, adopted)
        return
    try:
        known = await m.link.client.hkeys(m.keys.workers)
    except Exception as exc:
        if not is_wrong_type(exc):
            raise
        known = []  # the Workers repair their hash; their assignments expire by themselves
    stale = [m.keys.assign(as_text(wid)) for wid in known]
    await m.link.client.delete(*m.keys.run_scoped(), *m.keys.view_scoped(), *stale)


async def _run_taken(m: Manager) -> str | None:
    """Our run id when ``run`` says another Manager ended our run; else None (ours, missing
    after a Redis restart, unreadable, or junk: junk must not depose a Manager)."""
    try:
        raw: dict[Any, Any] = await m.link.client.hgetall(m.keys.run)
        if as_text(raw.get(b"run_id")) != m.run_id:  # another run's (or none): not ours to judge
            return None
        run = read_run(m.auth, raw, m.run_id)
    except Exception as exc:
        if is_wrong_type(exc) or isinstance(exc, ProtocolError):
            return None
        raise
    run_id, state = as_text(run.get(b"run_id")), as_text(run.get(b"state"))
    ended = run_id == m.run_id and state == K.DONE and m.state != K.DONE
    return run_id if ended else None


async def still_in_charge(m: Manager) -> bool:
    """False once another Manager wrote a fresh heartbeat: it adopted the run (or started
    another) while this one was frozen. Then this one leaves everything to it."""
    if m.deposed:
        return False
    # Read the heartbeat last: between that read and this Manager's next write lies the window
    # in which a stall lets it overwrite a rival's heartbeat (see docs/deploy.md).
    taken = await _run_taken(m)  # a rival may have adopted the run, ended it and gone
    if taken is None:
        beat = await read_beat(m.link, m.keys, m.auth)
        if beat is None or beat.owner in ("", m.owner) or m.link.now() - beat.at > STALE_AFTER_S:
            return True
        taken = beat.run_id
    m.deposed = True
    msg = (f"another manager took over gaggle {m.config.gaggle!r} (run {taken}) while this one "
           "was stalled; leaving the run to it")  # fmt: skip
    log.error("%s", msg)
    m.fatal = LoadTestError(msg)
    m.request_stop(msg)
    return False
