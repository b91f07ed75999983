"""One connection pool per run, shared by every user; cookies stay per user.

A ``TCPConnector`` per user cost each user its own DNS cache, SSL context and
idle sockets, and made creating 10,000 users slow. Users now share this pool's
connector, and each gets a light ``ClientSession`` of its own (its own cookie
jar, created at its first request), so logins and redirects that set cookies
behave exactly as before while keep-alive connections are reused by anyone.

The pool also times requests out. aiohttp's ``total`` timeout arms a timer per
request (about 7 % of a request's CPU time); here one sweeper task cancels the
requests that are overdue, checked a few times per timeout (``--timeout 60s``:
every second). Deadlines all share one timeout, so they expire in the order
requests started and a sweep stops at the first one still running.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp


class Deadlines:
    """Overdue requests of a pool's users are cancelled; the request helper turns that
    cancellation into a timeout (as ``asyncio.timeout`` does, with ``Task.uncancel``)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.period_s = min(1.0, max(0.02, timeout_s / 10))
        self.running: dict[asyncio.Task[object], float] = {}  # task -> deadline (perf_counter), oldest first
        self.fired: set[asyncio.Task[object]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self, task: asyncio.Task[object], now: float) -> None:
        self.running[task] = now + self.timeout_s
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def timed_out(self, task: asyncio.Task[object]) -> bool:
        """In ``except CancelledError``: True if the cancellation was ours alone (a timeout);
        False if someone else cancelled the task too (then the caller re-raises)."""
        if task not in self.fired:
            return False
        self.fired.discard(task)
        return task.uncancel() == 0

    def done(self, task: asyncio.Task[object]) -> None:
        self.running.pop(task, None)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            now = time.perf_counter()
            overdue = []
            for task, deadline in self.running.items():
                if deadline > now:
                    break
                overdue.append(task)
            for task in overdue:
                del self.running[task]
                self.fired.add(task)
                task.cancel()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None


class HttpPool:
    """Created once per run (or by a lone ``User``); ``close()`` when every user is done."""

    def __init__(self, timeout_s: float = 60.0) -> None:
        # A session used directly (``user.session``) keeps aiohttp's own total timeout;
        # the request helpers pass ``per_request`` and are timed out by ``deadlines``.
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.per_request = aiohttp.ClientTimeout(total=None, connect=timeout_s)
        self.deadlines = Deadlines(timeout_s)
        self._connector: aiohttp.TCPConnector | None = None

    @property
    def connector(self) -> aiohttp.TCPConnector:
        # Made on first use: aiohttp binds a connector to the running loop.
        if self._connector is None or self._connector.closed:
            # limit=0: the users decide concurrency (one request in flight each), not the pool.
            self._connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        return self._connector

    def session(self) -> aiohttp.ClientSession:
        """A session for one user: its own cookie jar, this pool's connections."""
        return aiohttp.ClientSession(
            # unsafe=True: keep cookies from IP-address hosts (targets are often 127.0.0.1).
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=self.connector,
            connector_owner=False,
            timeout=self.timeout,
            auto_decompress=True,
        )

    async def close(self) -> None:
        await self.deadlines.close()
        if self._connector is not None:
            await self._connector.close()
            self._connector = None
