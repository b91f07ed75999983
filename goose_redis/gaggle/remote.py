"""Steering and watching a gaggle from anywhere that reaches its Redis.

``send_command`` is ``goose-redis control`` and the dashboard's buttons: it answers at once
when no Manager could apply the command (no such gaggle, no live Manager, the run already
over), else adds the command to the ``commands`` stream, wakes the Manager and waits for its
``reply:{id}`` until a deadline. ``read_view`` is what a dashboard shows: the Manager's
snapshot and whether the Manager is alive, read from Redis alone.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from typing import Any

import orjson

from ..commands import Outcome, refused
from . import keys as K
from .auth import Secret
from .control_auth import command_auth, command_bytes
from .link import RedisLink, one_shot
from .protocol import ControlCommand, ControlReply, ManagerBeat, ProtocolError, as_text, decode

REPLY_POLL_S = 0.1
MAX_SNAPSHOT_BYTES = 4 * 1024 * 1024


def _manager_alive(raw: object) -> bool:
    try:
        ManagerBeat.from_bytes(raw)
    except ProtocolError:
        return False
    return True


async def send_command(
    link: RedisLink, gaggle: str, command: str, value: str | None, by: str, secret: Secret | None, timeout_s: float
) -> Outcome:
    """Send one checked command (``commands.check_command``) and return the Manager's answer."""
    keys = K.Keys(gaggle)
    async with link.client.pipeline(transaction=False) as p:
        p.hmget(keys.run, ["state", "stop_reason"])
        p.get(keys.manager)
        p.exists(keys.workers)
        (state_raw, reason_raw), beat, workers = await p.execute()
    state, reason = as_text(state_raw), as_text(reason_raw)
    if not state and beat is None and not workers:
        return refused(f"no such gaggle {gaggle!r} on {link.safe_url}")
    if state in (K.STOPPING, K.DONE):
        return refused(f"the run is already over ({reason or state})")
    if beat is None or not _manager_alive(beat):
        return refused(f"no live manager in gaggle {gaggle!r} on {link.safe_url}")
    cmd = ControlCommand(secrets.token_hex(8), command, value, by, link.now())
    signed = command_bytes(cmd, command_auth(secret, gaggle))
    async with link.client.pipeline(transaction=False) as p:
        p.xadd(keys.commands, {b"cmd": signed}, maxlen=K.COMMANDS_MAXLEN, approximate=True)
        p.expire(keys.commands, K.LONG_TTL_S)
        p.publish(keys.control, K.WAKE_COMMAND)
        await p.execute()
    deadline = time.monotonic() + timeout_s
    while True:
        raw = await link.client.get(keys.reply(cmd.id))
        if raw is not None:
            try:
                reply = ControlReply.from_bytes(raw)
            except ProtocolError as exc:
                return refused(f"the manager's reply is not readable: {exc}")
            return Outcome(reply.ok, reply.said, reply.error)
        if time.monotonic() >= deadline:
            return refused(
                f"no answer from the manager of gaggle {gaggle!r} within {timeout_s:g}s "
                f"(it applies a command at most {K.COMMAND_MAX_AGE_S:.0f}s old)"
            )
        await asyncio.sleep(REPLY_POLL_S)


async def read_view(link: RedisLink, gaggle: str) -> dict[str, Any]:
    """The dashboard's ``/api/snapshot``: the Manager's snapshot, and what Redis says besides."""
    keys = K.Keys(gaggle)
    async with link.client.pipeline(transaction=False) as p:
        p.get(keys.snapshot)
        p.get(keys.manager)
        p.hmget(keys.run, ["state", "run_id", "stop_reason"])
        p.exists(keys.report)
        snap_raw, beat, run, has_report = await p.execute(raise_on_error=False)
    snapshot, problem = None, None
    if isinstance(snap_raw, bytes):
        if len(snap_raw) > MAX_SNAPSHOT_BYTES:
            problem = f"the snapshot is {len(snap_raw)} bytes: more than a Manager writes"
        else:
            try:
                snapshot = decode(snap_raw, "snapshot")
            except ProtocolError as exc:
                problem = str(exc)
    elif isinstance(snap_raw, Exception):
        problem = str(snap_raw)
    state, run_id, reason = (as_text(x) for x in run) if isinstance(run, list) else ("", "", "")
    return {
        "gaggle": gaggle,
        "redis": link.safe_url,
        "manager_alive": beat is not None and not isinstance(beat, Exception) and _manager_alive(beat),
        "run": {"state": state or None, "run_id": run_id or None, "stop_reason": reason or None},
        "report": has_report is True or has_report == 1,
        "snapshot": snapshot,
        "problem": problem,
        "now": link.now(),
    }


async def read_report(link: RedisLink, gaggle: str) -> bytes | None:
    """The final JSON report the Manager left in Redis (None: none, or it has expired)."""
    raw = await link.client.get(K.Keys(gaggle).report)
    if not isinstance(raw, bytes):
        return None
    try:
        orjson.loads(raw)  # a report is served as JSON: never pass on whatever else sits there
    except orjson.JSONDecodeError:
        return None
    return raw


async def control(redis_url: str, gaggle: str, command: str, value: str | None, secret: Secret | None,
                  timeout_s: float) -> Outcome:  # fmt: skip
    """``goose-redis control``: connect (within ``timeout_s``), send, wait for the answer
    (within ``timeout_s`` more). Redis trouble is a LoadTestError: one line, exit 1."""
    by = f"control on {socket.gethostname()}"
    return await one_shot(
        redis_url, timeout_s, lambda link: send_command(link, gaggle, command, value, by, secret, timeout_s),
        total_s=2 * timeout_s + 1,
    )
