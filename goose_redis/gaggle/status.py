"""``goose-redis status``: a live gaggle's state, read from Redis only."""

from __future__ import annotations

from typing import Any

import click
import orjson

from ..config import redact_url, validate_redis_url
from ..errors import LoadTestError
from . import keys as K
from .link import TRANSIENT, RedisLink
from .protocol import ManagerBeat, ProtocolError


def _s(raw: Any) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else "" if raw is None else str(raw)


async def read_status(link: RedisLink, gaggle: str) -> dict[str, Any]:
    keys = K.Keys(gaggle)
    c = link.client
    run = {_s(k): _s(v) for k, v in (await c.hgetall(keys.run)).items()}
    beat_raw = await c.get(keys.manager)
    manager_alive = False
    if beat_raw is not None:
        try:
            ManagerBeat.from_bytes(beat_raw)
            manager_alive = True
        except ProtocolError:
            pass
    ids = sorted({_s(w) for w in await c.hkeys(keys.workers)})
    workers = []
    now = link.now()
    for wid in ids:
        h = {_s(k): _s(v) for k, v in (await c.hgetall(keys.worker(wid))).items()}
        alive = bool(await c.exists(keys.heartbeat(wid)))
        try:
            age: float | None = round(now - float(h["hb"]), 1)
        except (KeyError, ValueError):
            age = None
        workers.append(
            {
                "id": wid,
                "index": h.get("index", ""),
                "host": h.get("host", ""),
                "state": h.get("state", "") if alive else f"{h.get('state', '?')} (no heartbeat)",
                "users": h.get("users", ""),
                "requests": h.get("requests", ""),
                "failures": h.get("failures", ""),
                "heartbeat_age_s": age,
            }
        )
    return {
        "gaggle": gaggle,
        "redis": link.safe_url,
        "manager": {"alive": manager_alive, **run},
        "workers": workers,
        "metrics_entries": await c.xlen(keys.metrics),
    }


def format_status(st: dict[str, Any]) -> str:
    m = st["manager"]
    lines = [
        f"gaggle {st['gaggle']!r} on {st['redis']}",
        f"manager: {'alive' if m['alive'] else 'not running'}; run {m.get('run_id', '-')}, "
        f"state {m.get('state', '-')}, users {m.get('users', '-')}, expect workers {m.get('expect_workers', '-')}",
    ]
    if m.get("stop_reason"):
        lines.append(f"stop reason: {m['stop_reason']}")
    lines.append(f"metrics stream entries: {st['metrics_entries']}")
    header = f"{'#':>3} {'host':<20} {'state':<24} {'users':>6} {'requests':>10} {'fails':>8} {'hb age':>7}  id"
    lines += ["", header, "-" * len(header)]
    for w in st["workers"]:
        age = "-" if w["heartbeat_age_s"] is None else f"{w['heartbeat_age_s']}s"
        lines.append(
            f"{w['index']:>3} {w['host'][:20]:<20} {w['state'][:24]:<24} {w['users']:>6} "
            f"{w['requests']:>10} {w['failures']:>8} {age:>7}  {w['id']}"
        )
    if not st["workers"]:
        lines.append("(no workers registered)")
    return "\n".join(lines)


async def show_status(url: str, gaggle: str, as_json: bool) -> int:
    validate_redis_url(url)
    link = RedisLink(url, deadline_s=5.0)
    try:
        await link.connect()
        st = await read_status(link, gaggle)
    except TRANSIENT as exc:
        raise LoadTestError(f"cannot read gaggle {gaggle!r} from {redact_url(url)}: {exc}") from None
    finally:
        await link.close()
    click.echo(orjson.dumps(st, option=orjson.OPT_INDENT_2).decode() if as_json else format_status(st))
    return 0
