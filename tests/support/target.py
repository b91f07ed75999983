"""CountingTarget: a real HTTP server to load-test, with thread-safe hit counters.

It runs in a background thread with its own event loop, so in-process asyncio tests
(``asyncio.run`` in the test thread) and CLI subprocesses can both hit it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import overload

from aiohttp import web

HOST = "127.0.0.1"
COOKIE_NAME = "goose_test"
MAX_SLOW_MS = 60_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query_string: str
    headers: dict[str, str]
    body: bytes


class CountingTarget:
    """An aiohttp server on 127.0.0.1 (port picked by the OS) that counts what it gets.

    Counters are keyed ``"METHOD /path"`` (path without the query):

    * ``hits`` / ``total``: requests received (counted before the handler runs);
    * ``completed`` / ``completed_total``: responses whose handler returned (or raised an
      HTTP error response). With ``handler_cancellation=True`` a client that disconnects
      cancels the handler, so ``hits - completed`` shows abandoned requests.

    The last ``recent_limit`` requests are kept (method, path, query, headers, body) for
    tests that check what was sent: see :meth:`recent`.

    Routes (``*`` = any method):
    ``GET /`` "ok"; ``* /any/{tail}`` 200; ``* /status/{code}`` that status (add
    ``?location=/x`` for a redirect); ``* /slow?ms=N`` sleeps N ms then 200; ``GET /json``;
    ``* /echo`` method, path, query, headers and body as JSON; ``GET /cookie/set`` sets the
    cookie ``goose_test``; ``GET /cookie/check`` 200 when that cookie came back, else 401.
    """

    def __init__(self, *, handler_cancellation: bool = False, recent_limit: int = 1000) -> None:
        self._handler_cancellation = handler_cancellation
        self._cond = threading.Condition()
        self._hits: Counter[str] = Counter()
        self._completed: Counter[str] = Counter()
        self._recent: deque[RecordedRequest] = deque(maxlen=recent_limit)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 10.0) -> CountingTarget:
        if self._thread is not None:
            raise RuntimeError("CountingTarget already started")
        self._thread = threading.Thread(target=self._serve, name="counting-target", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"CountingTarget did not start within {timeout}s")
        if self._startup_error is not None:
            raise RuntimeError("CountingTarget failed to start") from self._startup_error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"CountingTarget thread did not stop within {timeout}s")

    def __enter__(self) -> CountingTarget:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._setup())
        except BaseException as exc:  # reported to start() in the test thread
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _setup(self) -> None:
        # Short shutdown timeout: a /slow request in flight must not hold up stop() for 60 s.
        runner = web.AppRunner(
            self._make_app(),
            access_log=None,
            shutdown_timeout=1.0,
            handler_cancellation=self._handler_cancellation,
        )
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        self.port = runner.addresses[0][1]

    # ------------------------------------------------------------------ addresses

    @property
    def host(self) -> str:
        return HOST

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:40123``."""
        return f"http://{HOST}:{self.port}"

    # ------------------------------------------------------------------ counters

    @overload
    def hits(self) -> dict[str, int]: ...

    @overload
    def hits(self, key: str) -> int: ...

    def hits(self, key: str | None = None) -> int | dict[str, int]:
        """Requests received for ``key`` (``"GET /json"``), or a copy of all counters."""
        with self._cond:
            return dict(self._hits) if key is None else self._hits[key]

    def total(self) -> int:
        with self._cond:
            return sum(self._hits.values())

    @overload
    def completed(self) -> dict[str, int]: ...

    @overload
    def completed(self, key: str) -> int: ...

    def completed(self, key: str | None = None) -> int | dict[str, int]:
        """Responses whose handler returned, per key or all (copy)."""
        with self._cond:
            return dict(self._completed) if key is None else self._completed[key]

    def completed_total(self) -> int:
        with self._cond:
            return sum(self._completed.values())

    def recent(self) -> list[RecordedRequest]:
        with self._cond:
            return list(self._recent)

    def reset(self) -> None:
        with self._cond:
            self._hits.clear()
            self._completed.clear()
            self._recent.clear()

    def wait_for_hits(self, count: int, key: str | None = None, timeout: float = 10.0) -> int:
        """Block until at least ``count`` requests were received (for ``key`` or in total)."""
        return self._wait(self._hits, count, key, timeout, "received")

    def wait_for_completed(self, count: int, key: str | None = None, timeout: float = 10.0) -> int:
        return self._wait(self._completed, count, key, timeout, "completed")

    def _wait(self, counter: Counter[str], count: int, key: str | None, timeout: float, what: str) -> int:
        def current() -> int:
            return sum(counter.values()) if key is None else counter[key]

        deadline = time.monotonic() + timeout
        with self._cond:
            while (value := current()) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s: {value} < {count} requests {what}"
                        f" for {key or 'all keys'}; counters: {dict(counter)}"
                    )
                self._cond.wait(remaining)
            return value

    # ------------------------------------------------------------------ app

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._count])
        r = app.router
        r.add_get("/", _ok)
        r.add_route("*", "/any/{tail:.*}", _ok)
        r.add_route("*", r"/status/{code:\d+}", _status)
        r.add_route("*", "/slow", _slow)
        r.add_get("/json", _json)
        r.add_route("*", "/echo", _echo)
        r.add_get("/cookie/set", _cookie_set)
        r.add_get("/cookie/check", _cookie_check)
        return app

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        key = f"{request.method} {request.path}"
        body = await request.read()
        record = RecordedRequest(request.method, request.path, request.query_string, dict(request.headers), body)
        with self._cond:
            self._hits[key] += 1
            self._recent.append(record)
            self._cond.notify_all()
        try:
            response = await handler(request)
        except web.HTTPException:
            self._mark_completed(key)
            raise
        self._mark_completed(key)
        return response

    def _mark_completed(self, key: str) -> None:
        with self._cond:
            self._completed[key] += 1
            self._cond.notify_all()


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    if not 200 <= code <= 599:
        return web.Response(status=400, text="status must be 200..599")
    headers = {}
    location = request.query.get("location")
    if location and 300 <= code < 400:
        headers["Location"] = location
    if code in (204, 304):
        return web.Response(status=code, headers=headers)
    return web.Response(status=code, text=f"status {code}", headers=headers)


async def _slow(request: web.Request) -> web.Response:
    try:
        ms = min(max(int(request.query.get("ms", "100")), 0), MAX_SLOW_MS)
    except ValueError:
        return web.Response(status=400, text="ms must be an integer")
    await asyncio.sleep(ms / 1000)
    return web.Response(text=f"slept {ms} ms")


async def _json(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "name": "goose", "items": [1, 2, 3]})


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": dict(request.headers),
            "body": body.decode(errors="replace"),
        }
    )


async def _cookie_set(request: web.Request) -> web.Response:
    response = web.Response(text="cookie set")
    response.set_cookie(COOKIE_NAME, request.query.get("value", "1"), path="/")
    return response


async def _cookie_check(request: web.Request) -> web.Response:
    if COOKIE_NAME in request.cookies:
        return web.Response(text="cookie present")
    return web.Response(status=401, text="cookie missing")
