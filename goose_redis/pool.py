"""One connection pool per run, shared by every user; cookies stay per user.

A ``TCPConnector`` per user cost each user its own DNS cache, SSL context and
idle sockets, and made creating 10,000 users slow. Users now share this pool's
connector, and each gets a light ``ClientSession`` of its own (its own cookie
jar, created at its first request), so logins and redirects that set cookies
behave exactly as before while keep-alive connections are reused by anyone.
"""

from __future__ import annotations

import aiohttp


class HttpPool:
    """Created once per run (or by a lone ``User``); ``close()`` when every user is done."""

    def __init__(self, timeout_s: float = 60.0) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
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
        if self._connector is not None:
            await self._connector.close()
            self._connector = None
