"""A simulated user: its own cookie jar on the run's shared connection pool, and request helpers.

Requests are timed from just before the request is sent until the whole body
is read. Their records wait in the user until the transaction ends, so a
transaction can still mark a response failed (or succeeded) after reading it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from .pool import HttpPool
from .scenario import Scenario

if TYPE_CHECKING:
    from .recorder import Recorder
    from .throttle import Throttle

log = logging.getLogger("goose_redis.user")

Headers = Mapping[str, str] | None
Params = Mapping[str, str | int | float] | None

# Flush pending records early if a transaction makes very many requests.
MAX_PENDING = 1000


class Response:
    """What a request gave back; ``status`` is 0 when no HTTP response came."""

    __slots__ = (
        "method", "name", "url", "status", "reason", "headers", "body", "elapsed_ms",
        "started", "success", "error", "_text", "_recorded",
    )  # fmt: skip

    def __init__(
        self,
        method: str,
        name: str,
        url: str,
        started: float,
        elapsed_ms: float,
        status: int = 0,
        reason: str = "",
        headers: CIMultiDictProxy[str] | None = None,
        body: bytes = b"",
        success: bool = True,
        error: str | None = None,
    ) -> None:
        self.method = method
        self.name = name
        self.url = url
        self.started = started
        self.elapsed_ms = elapsed_ms
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.success = success
        self.error = error
        self._text: str | None = None
        self._recorded = False

    @property
    def ok(self) -> bool:
        return self.success

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self.body.decode("utf-8", "replace")
        return self._text

    def json(self) -> Any:
        return orjson.loads(self.body)

    def fail(self, reason: str = "validation failed") -> None:
        """Count this request as failed, with ``reason`` in the errors table."""
        self._set_outcome(False, reason)

    def succeed(self) -> None:
        """Count this request as a success (for example an expected 404)."""
        self._set_outcome(True, None)

    def _set_outcome(self, success: bool, error: str | None) -> None:
        if self._recorded:
            log.warning("%s %s: outcome changed after its transaction ended; ignored", self.method, self.name)
            return
        self.success = success
        self.error = error

    def __repr__(self) -> str:
        return f"<Response {self.method} {self.name} {self.status} {self.elapsed_ms:.2f}ms ok={self.success}>"


def describe_exception(exc: BaseException, timeout_s: float) -> str:
    """A short, readable error text for the errors table."""
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return f"timeout after {timeout_s:g}s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        # asyncio's strerror is "Connect call failed ('127.0.0.1', 1)"; the errno says why
        # ("Connection refused"). DNS errors have negative codes and their own text.
        reason = os.strerror(err.errno) if err.errno and err.errno > 0 else (err.strerror or str(err))
        return f"connection failed: {exc.host}:{exc.port}: {reason}"
    text = str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"


class User:
    """One user of the load test; passed to every transaction function.

    Cheap to create (no session, no sockets until its first request): a run may
    launch thousands a second. ``pool`` is the run's shared ``HttpPool``; without
    one the user makes and closes a pool of its own.
    """

    def __init__(
        self,
        index: int,
        scenario: Scenario,
        scenario_index: int,
        host: str,
        recorder: Recorder,
        timeout_s: float = 60.0,
        pool: HttpPool | None = None,
        throttle: Throttle | None = None,
        track_slowest: bool = False,
    ) -> None:
        self.index = index
        self.scenario = scenario
        self.scenario_index = scenario_index
        self.host = host.rstrip("/")
        self.session_data: dict[str, Any] = {}
        self.timeout_s = timeout_s
        self.transaction_name = ""
        self._recorder = recorder
        self._pending: list[Response] = []
        self._pool = pool
        self._own_pool = pool is None
        self._session: aiohttp.ClientSession | None = None
        self._throttle = throttle
        # Coordinated-omission mitigation wants the slowest request of each pass.
        self._track_slowest = track_slowest
        self.slowest: Response | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """This user's ``aiohttp.ClientSession``: its own cookie jar, the run's connections."""
        if self._session is None:
            if self._pool is None:
                self._pool = HttpPool(self.timeout_s)
            self._session = self._pool.session()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._own_pool and self._pool is not None:
            await self._pool.close()
            self._pool = None

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.host}/{path.lstrip('/')}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        name: str | None = None,
        headers: Headers = None,
        params: Params = None,
        data: Any = None,
        json: Any = None,
        expect_status: int | None = None,
        allow_redirects: bool = True,
    ) -> Response:
        url = path if path.startswith(("http://", "https://")) else f"{self.host}/{path.lstrip('/')}"
        if name is None:
            name = path.split("?", 1)[0] if "?" in path else path
        session = self._session or self.session
        pool = self._pool
        assert pool is not None  # the session property made one
        # per_request: no timer per request, the pool's sweeper times requests out
        kwargs: dict[str, Any] = {"allow_redirects": allow_redirects, "timeout": pool.per_request}
        if headers:
            kwargs["headers"] = headers
        if params:
            kwargs["params"] = params
        if json is not None:
            kwargs["data"] = orjson.dumps(json)
            kwargs["headers"] = {"Content-Type": "application/json", **(headers or {})}
        elif data is not None:
            kwargs["data"] = data
        throttle = self._throttle
        if throttle is not None and throttle.rate is not None:
            await throttle.acquire()  # the wait for a slot is not part of the response time
        deadlines = pool.deadlines
        task = asyncio.current_task()
        assert task is not None
        started = time.time()
        t0 = time.perf_counter()
        deadlines.start(task, t0)
        try:
            async with session.request(method, url, **kwargs) as r:
                body = await r.read()
            elapsed_ms = (time.perf_counter() - t0) * 1000.0
            status = r.status
            if expect_status is not None:
                success = status == expect_status
                error = None if success else f"expected status {expect_status}, got {status} {r.reason or ''}"
            else:
                success = status < 400
                error = None if success else f"{status} {r.reason or ''}".strip()
            resp = Response(
                method, name, url, started, elapsed_ms, status, r.reason or "", r.headers, body, success, error
            )
        except asyncio.CancelledError:
            if not deadlines.timed_out(task):
                raise  # the run is stopping: not ours to swallow
            resp = self._failed(method, name, url, started, t0, TimeoutError())
        except Exception as exc:  # every transport failure becomes a failed request, never a crash
            resp = self._failed(method, name, url, started, t0, exc)
        finally:
            deadlines.done(task)
        self._pending.append(resp)
        if len(self._pending) >= MAX_PENDING:
            self.flush()
        return resp

    def _failed(self, method: str, name: str, url: str, started: float, t0: float, exc: BaseException) -> Response:
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        timeout_s = self._pool.deadlines.timeout_s if self._pool is not None else self.timeout_s
        return Response(method, name, url, started, elapsed_ms, success=False, error=describe_exception(exc, timeout_s))

    def flush(self) -> bool:
        """Record pending requests; return True if any of them failed."""
        failed = False
        for resp in self._pending:
            resp._recorded = True
            failed |= not resp.success
            self._recorder.request(resp, self)
            if self._track_slowest and (self.slowest is None or resp.elapsed_ms > self.slowest.elapsed_ms):
                self.slowest = resp
        self._pending.clear()
        return failed

    # Plain functions returning the request coroutine, not ``async def`` wrappers: one
    # coroutine frame less to resume at every step of every request.
    def get(self, path: str, **kw: Any) -> Coroutine[Any, Any, Response]:
        return self.request("GET", path, **kw)

    def head(self, path: str, **kw: Any) -> Coroutine[Any, Any, Response]:
        return self.request("HEAD", path, **kw)

    def delete(self, path: str, **kw: Any) -> Coroutine[Any, Any, Response]:
        return self.request("DELETE", path, **kw)

    def post(self, path: str, data: Any = None, **kw: Any) -> Coroutine[Any, Any, Response]:
        return self.request("POST", path, data=data, **kw)

    def put(self, path: str, data: Any = None, **kw: Any) -> Coroutine[Any, Any, Response]:
        return self.request("PUT", path, data=data, **kw)

    def patch(self, path: str, data: Any = None, **kw: Any) -> Coroutine[Any, Any, Response]:
        return self.request("PATCH", path, data=data, **kw)

    def post_json(self, path: str, json: Any, **kw: Any) -> Coroutine[Any, Any, Response]:
        return self.request("POST", path, json=json, **kw)

    def post_form(self, path: str, form: Mapping[str, str], **kw: Any) -> Coroutine[Any, Any, Response]:
        # A dict body is sent as application/x-www-form-urlencoded by aiohttp.
        return self.request("POST", path, data=dict(form), **kw)
