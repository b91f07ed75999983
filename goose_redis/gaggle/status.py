"""``goose-redis status``: a live gaggle's state, read from Redis only.

Redis is shared and anyone can write to it with ``redis-cli``, so nothing read
is trusted: a key of the wrong type, or a field that is not the number it
should be, is shown as *unreadable* and the rest is still shown. The JSON shape
(``--json``) is documented in docs/redis-keys.md; numbers are JSON numbers and
a missing value is ``null``. Exit 0 whenever Redis answered, 1 when it did not
answer within ``--timeout``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import click
import orjson
from redis.exceptions import ResponseError

from ..config import StatusConfig
from . import keys as K
from .link import RedisLink, one_shot
from .protocol import ManagerBeat, ProtocolError, decode

Parse = Callable[[str], Any]


def _int(text: str) -> int:
    if not text.lstrip("-").isascii() or not text.lstrip("-").isdigit() or len(text) > 19:
        raise ValueError(text)
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


# What each field of the hashes holds (docs/redis-keys.md); other fields are not shown.
RUN_FIELDS: dict[str, Parse] = {
    "run_id": str, "state": str, "gaggle": str, "expect_workers": _int, "users": _int, "hatch_rate": _float,
    "run_time_s": _float, "host": str, "hash": str, "started_at": _float, "stop_reason": str,
    "updated_at": _float, "ended_at": _float,
}  # fmt: skip
WORKER_FIELDS: dict[str, Parse] = {
    "index": _int, "host": str, "pid": _int, "state": str, "users": _int, "requests": _int, "failures": _int,
    "hb": _float,
}  # fmt: skip
UNREADABLE = "unreadable"


def _s(raw: Any) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else "" if raw is None else str(raw)


def typed(fields: Mapping[str, Parse], raw: Any) -> dict[str, Any]:
    """A hash's fields as numbers and strings; a missing or empty field is None, a garbled one
    is None and listed under ``unreadable``."""
    got = {_s(k): _s(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}
    out: dict[str, Any] = {}
    bad: list[str] = []
    for name, parse in fields.items():
        text = got.get(name, "")
        try:
            out[name] = parse(text) if text != "" else None
        except ValueError:
            out[name] = None
            bad.append(name)
    out[UNREADABLE] = bad
    return out


class _Reads:
    """Replies of a non-transactional pipeline: a refused command (WRONGTYPE) is noted, not raised."""

    def __init__(self) -> None:
        self.unreadable: list[dict[str, str]] = []

    def take(self, key: str, reply: Any, default: Any) -> Any:
        if isinstance(reply, ResponseError):
            self.unreadable.append({"key": key, "reason": str(reply)})
            return default
        if isinstance(reply, BaseException):
            raise reply
        return reply


async def read_status(link: RedisLink, gaggle: str) -> dict[str, Any]:
    keys = K.Keys(gaggle)
    reads = _Reads()
    async with link.client.pipeline(transaction=False) as p:
        p.hgetall(keys.run)
        p.get(keys.manager)
        p.hkeys(keys.workers)
        p.xlen(keys.metrics)
        p.get(keys.snapshot)
        run_raw, beat_raw, ids_raw, xlen, snap_raw = await p.execute(raise_on_error=False)
    run = typed(RUN_FIELDS, reads.take(keys.run, run_raw, {}))
    beat = reads.take(keys.manager, beat_raw, None)
    manager_alive = False
    if beat is not None:
        try:
            ManagerBeat.from_bytes(beat)
            manager_alive = True
        except ProtocolError as exc:
            reads.unreadable.append({"key": keys.manager, "reason": f"not a manager heartbeat: {exc}"})
    ids = sorted({_s(w) for w in reads.take(keys.workers, ids_raw, [])})
    metrics_entries = reads.take(keys.metrics, xlen, None)

    replies: list[Any] = []
    if ids:
        async with link.client.pipeline(transaction=False) as p:
            for wid in ids:
                p.hgetall(keys.worker(wid))
                p.exists(keys.heartbeat(wid))
            replies = await p.execute(raise_on_error=False)
    now = link.now()
    workers = []
    for n, wid in enumerate(ids):
        w = typed(WORKER_FIELDS, reads.take(keys.worker(wid), replies[2 * n], {}))
        hb = w.pop("hb")
        workers.append(
            {
                "id": wid,
                **w,
                "alive": bool(reads.take(keys.heartbeat(wid), replies[2 * n + 1], 0)),
                "heartbeat_age_s": None if hb is None else round(now - hb, 1),
            }
        )
    return {
        "gaggle": gaggle,
        "redis": link.safe_url,
        "manager": {"alive": manager_alive, **run},
        "workers": workers,
        "metrics_entries": metrics_entries if isinstance(metrics_entries, int) else None,
        "live": live_figures(keys.snapshot, reads.take(keys.snapshot, snap_raw, None), reads),
        "unreadable": reads.unreadable,
    }


def live_figures(key: str, raw: Any, reads: _Reads) -> dict[str, Any] | None:
    """The Manager's merged figures from its ``snapshot`` (what dashboards show), or None."""
    if raw is None:
        return None
    try:
        snap = decode(raw, "snapshot")
        totals, workers = snap["totals"], snap["workers"]
        live = {
            "at": float(snap["at"]), "state": str(snap["state"]), "users": int(snap["users"]),
            "requests": int(totals["requests"]), "failures": int(totals["failures"]), "rps": float(totals["rps"]),
            "p95_ms": None if totals["p95_ms"] is None else float(totals["p95_ms"]),
            "workers": {str(w["id"]): {"users": int(w["users"]), "requests": int(w["requests"])} for w in workers},
            "events": len(snap["events"]) + int(snap.get("events_omitted", 0)),
        }  # fmt: skip
    except (ProtocolError, KeyError, TypeError, ValueError) as exc:
        reads.unreadable.append({"key": key, "reason": f"not a snapshot: {exc}"})
        return None
    return live


def _show(section: Mapping[str, Any], name: str) -> str:
    if name in section.get(UNREADABLE, ()):
        return UNREADABLE
    value = section.get(name)
    return "-" if value is None else str(value)


def format_status(st: dict[str, Any]) -> str:
    m = st["manager"]
    lines = [
        f"gaggle {st['gaggle']!r} on {st['redis']}",
        f"manager: {'alive' if m['alive'] else 'not running'}; run {_show(m, 'run_id')}, "
        f"state {_show(m, 'state')}, users {_show(m, 'users')}, expect workers {_show(m, 'expect_workers')}",
    ]
    if m.get("stop_reason"):
        lines.append(f"stop reason: {m['stop_reason']}")
    if m[UNREADABLE]:
        lines.append(f"unreadable run fields: {', '.join(m[UNREADABLE])}")
    entries = st["metrics_entries"]
    lines.append(f"metrics stream entries: {UNREADABLE if entries is None else entries}")
    live = st.get("live")
    if live is not None:
        p95 = "-" if live["p95_ms"] is None else f"{live['p95_ms']:g} ms"
        lines.append(f"merged ({live['state']}): {live['users']} users, {live['requests']} requests, "
                     f"{live['failures']} failures, {live['rps']:g} req/s, p95 {p95}, {live['events']} control events")
    header = f"{'#':>3} {'host':<20} {'state':<24} {'users':>6} {'requests':>10} {'fails':>8} {'hb age':>7}  id"
    lines += ["", header, "-" * len(header)]
    for w in st["workers"]:
        age = "-" if w["heartbeat_age_s"] is None else f"{w['heartbeat_age_s']}s"
        state = _show(w, "state") + ("" if w["alive"] else " (no heartbeat)")
        lines.append(
            f"{_show(w, 'index'):>3} {_show(w, 'host')[:20]:<20} {state[:24]:<24} {_show(w, 'users'):>6} "
            f"{_show(w, 'requests'):>10} {_show(w, 'failures'):>8} {age:>7}  {w['id']}"
        )
    if not st["workers"]:
        lines.append("(no workers registered)")
    for bad in st["unreadable"]:
        lines.append(f"unreadable: {bad['key']}: {bad['reason']}")
    return "\n".join(lines)


async def show_status(cfg: StatusConfig) -> int:
    st = await one_shot(cfg.redis_url, cfg.timeout_s, lambda link: read_status(link, cfg.gaggle))
    click.echo(orjson.dumps(st, option=orjson.OPT_INDENT_2).decode() if cfg.as_json else format_status(st))
    return 0
