"""``goose-redis dashboard``: a gaggle's live page, served from its Redis alone.

The Manager writes a small merged snapshot every metrics interval; this server reads it (and
the Manager's heartbeat) per request and keeps nothing, so it runs on any host that reaches
Redis, restarts at will, and several may serve one gaggle.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from typing import Any

import click
from redis.exceptions import RedisError

from ..commands import Outcome, refused
from ..config import RemoteConfig
from ..errors import LoadTestError
from ..gaggle.link import TRANSIENT, RedisGone, RedisLink
from ..gaggle.remote import read_report, read_view, send_command
from .server import make_app, serve

log = logging.getLogger("goose_redis.dashboard")

REDIS_CALL_S = 5.0
CONNECT_S = 3.0


class RedisSource:
    def __init__(self, cfg: RemoteConfig, link: RedisLink) -> None:
        self.cfg = cfg
        self.link = link
        self.by = f"dashboard on {socket.gethostname()}"

    async def view(self) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(read_view(self.link, self.cfg.gaggle), REDIS_CALL_S)
        except (*TRANSIENT, RedisError) as exc:
            return {"gaggle": self.cfg.gaggle, "redis": self.link.safe_url, "manager_alive": False, "run": {},
                    "report": False, "snapshot": None, "problem": f"cannot read Redis: {exc or type(exc).__name__}"}

    async def command(self, command: str, value: str | None) -> Outcome:
        try:
            return await asyncio.wait_for(
                send_command(self.link, self.cfg.gaggle, command, value, self.by, self.cfg.secret, self.cfg.timeout_s),
                self.cfg.timeout_s + REDIS_CALL_S,
            )
        except (*TRANSIENT, RedisError) as exc:
            return refused(f"cannot reach Redis at {self.link.safe_url}: {exc or type(exc).__name__}")

    async def report(self) -> bytes | None:
        try:
            return await asyncio.wait_for(read_report(self.link, self.cfg.gaggle), REDIS_CALL_S)
        except (*TRANSIENT, RedisError):
            return None


async def run_dashboard(cfg: RemoteConfig) -> int:
    link = RedisLink(cfg.redis_url, deadline_s=CONNECT_S)
    try:
        try:
            await asyncio.wait_for(link.connect(), CONNECT_S + 1)
        except (TimeoutError, RedisGone) as exc:
            if "refused us" in str(exc) or "certificate" in str(exc) or "TLS" in str(exc):
                raise LoadTestError(str(exc)) from None  # a password or a certificate will not fix itself
            log.warning("cannot reach Redis at %s yet; serving anyway (the page says so until it can)", link.safe_url)
        app = make_app(RedisSource(cfg, link), cfg.bind)
        try:
            runner, url = await serve(app, cfg.bind, cfg.port)
        except OSError as exc:
            raise LoadTestError(f"cannot serve the dashboard on {cfg.bind}:{cfg.port}: {exc.strerror or exc}") from None
        click.echo(f"dashboard of gaggle {cfg.gaggle!r} on {link.safe_url}: {url}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
        return 0
    finally:
        await link.close()
