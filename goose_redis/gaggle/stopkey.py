"""The ``stop`` key: anyone may write it (a Worker on Ctrl-C, an operator with redis-cli), so
what is read there is bounded and checked, and junk never silences a real request.

A read takes at most ``MAX_STOP_BYTES`` (GETRANGE): a huge value written by mistake costs
every poller a few kilobytes, not megabytes twice a second. A value that is not a stop
request (junk, or cut at the bound) is reported as such; a key of the wrong type is
refused by Redis (the Manager, which owns the run's keys, deletes it).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import keys as K
from .auth import Auth
from .link import RedisLink, is_wrong_type
from .protocol import ProtocolError, StopRequest, Unauthenticated

MAX_STOP_BYTES = 4096


@dataclass(frozen=True)
class StopRead:
    request: StopRequest | None = None  # a valid stop request
    junk: str | None = None  # why the value there is not one
    wrong_type: bool = False  # the key holds a hash, a list...
    refused: bool = False  # in a gaggle with a secret: not signed for this run (counted, logged once)

    @property
    def empty(self) -> bool:
        return self.request is None and self.junk is None and not self.wrong_type and not self.refused


def parse_stop(raw: object, auth: Auth | None = None, run_id: str = "", now: float | None = None) -> StopRead:
    if not raw:
        return StopRead()
    if isinstance(raw, bytes) and len(raw) >= MAX_STOP_BYTES:
        return StopRead(junk=f"longer than {MAX_STOP_BYTES} bytes")
    try:
        return StopRead(request=StopRequest.from_bytes(raw, auth, run_id=run_id, now=now))
    except Unauthenticated:
        return StopRead(refused=True)
    except ProtocolError as exc:
        return StopRead(junk=str(exc))


async def read_stop(link: RedisLink, keys: K.Keys, auth: Auth | None = None, run_id: str = "",
                    now: float | None = None) -> StopRead:  # fmt: skip
    """One bounded read of the stop key (raises what the client raises: call it in ``attempt``);
    with ``auth``, a request not signed for ``run_id`` (or out of its window at ``now``) is refused."""
    async with link.client.pipeline(transaction=False) as p:
        p.getrange(keys.stop, 0, MAX_STOP_BYTES - 1)
        (raw,) = link.replies("reading stop requests", await p.execute(raise_on_error=False))
    if is_wrong_type(raw):
        link.note_refused("reading stop requests", raw)
        return StopRead(wrong_type=True)
    if isinstance(raw, BaseException):
        raise raw
    return parse_stop(raw, auth, run_id, now)


async def write_stop(link: RedisLink, keys: K.Keys, msg: StopRequest, auth: Auth | None = None,
                     run_id: str = "") -> None:  # fmt: skip
    """Ask the gaggle to stop: the first valid request wins, but junk, a forgery or a key of the
    wrong type in its place is overwritten (SET replaces a value of any type)."""
    c = link.client
    raw = msg.to_bytes(auth, run_id=run_id)
    if not await c.set(keys.stop, raw, nx=True, ex=K.LONG_TTL_S):
        there = await read_stop(link, keys, auth, run_id, link.now())
        if there.request is None:
            await c.set(keys.stop, raw, ex=K.LONG_TTL_S)
    await c.publish(keys.control, K.WAKE_EXIT)
