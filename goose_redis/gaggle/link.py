"""The connection to Redis, with outage bookkeeping and a shared clock.

The load must go on while Redis is away for a moment: callers wrap each
periodic Redis call in ``attempt``, which returns None on a connection
problem, logs the outage once and its end once, and raises ``RedisGone``
once Redis has been away past the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..config import redact_url
from ..errors import InvalidOption, LoadTestError
from ..series import Series
from .keys import SOCKET_TIMEOUT_S

log = logging.getLogger("goose_redis.gaggle")

T = TypeVar("T")
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)


class RedisGone(LoadTestError):
    """Redis stayed away past the deadline."""


class RedisRefused(RedisGone):
    """Redis refused us for good: an ACL without a command, key or channel we need (NOPERM),
    or credentials it no longer takes. Retrying cannot help, so the process stops."""


ACL_FIX = "give the ACL user the gaggle's commands, keys and channels (docs/deploy.md, 'A shared Redis')"


def is_permission_error(exc: object) -> bool:
    """NOPERM (and a password Redis no longer takes): final, never a passing fault."""
    if isinstance(exc, NoPermissionError | AuthenticationError):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(("NOPERM", "WRONGPASS", "NOAUTH"))


def is_wrong_type(exc: object) -> bool:
    """A key holding another kind of value (say, written with redis-cli): repairable, never final."""
    return isinstance(exc, ResponseError) and str(exc).startswith("WRONGTYPE")


def make_client(url: str, **extra: Any) -> aioredis.Redis:
    # The asyncio Retry class: the sync one silently does nothing here.
    return aioredis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=3.0,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=15,
        **extra,
    )


def tls_refusal(exc: BaseException) -> str | None:
    """Why the TLS handshake behind a connection error can never succeed, else None.

    Either we do not trust the server's certificate, or the server sent an alert
    (typically: it wants a client certificate we did not give). An unexpected EOF
    in the handshake (a server restarting) stays a transient error.
    """
    cause: BaseException | None = exc
    for _ in range(8):  # redis-py wraps the ssl error once or twice
        if cause is None:
            return None
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"cannot verify its TLS certificate: {cause.verify_message or cause.reason} "
                "(for a private CA add ?ssl_ca_certs=/path/to/ca.crt to the URL)"
            )
        if isinstance(cause, ssl.SSLError) and "ALERT" in str(cause.reason or ""):
            return (
                f"it refused the TLS handshake: {cause.reason} (if it wants a client certificate, "
                "add ?ssl_certfile=/path/to/client.crt&ssl_keyfile=/path/to/client.key to the URL)"
            )
        cause = cause.__cause__ or cause.__context__
    return None


def shift_series(series: Series, by_s: float) -> Series:
    """``series`` with every bucket ``by_s`` seconds later, to whole seconds.

    A Worker records on its own clock; the gaggle's clock is Redis's. A Worker moves
    its deltas onto the gaggle clock (``+skew``) and the Manager onto its own
    (``-skew``), so charts from hosts with skewed clocks line up. Offsets under half
    a second change nothing (the buckets are a second wide)."""
    offset = round(by_s)
    if offset == 0 or not series.buckets:
        return series
    moved = Series(series.interval_s)
    moved.buckets = {key + offset: bucket for key, bucket in series.buckets.items()}
    out = Series(series.interval_s)
    out.merge(moved)  # re-aligns the keys when the interval is wider than a second
    return out


async def cancel_and_wait(*tasks: asyncio.Task[Any], patience_s: float = 0.5, rounds: int = 20) -> None:
    """Cancel ``tasks`` and wait until they have ended.

    One ``cancel()`` is not always enough on Python 3.11: ``asyncio.wait_for`` inside
    redis-py can swallow a cancellation that lands as its inner call finishes, and a
    loop that then carries on would hold up shutdown for ever. So cancel again until
    every task is done (bounded).
    """
    pending = {t for t in tasks if not t.done()}
    for _ in range(rounds):
        if not pending:
            break
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=patience_s)
    if pending:
        log.warning("%d background task(s) did not stop; leaving them", len(pending))
    await asyncio.gather(*(t for t in tasks if t.done()), return_exceptions=True)


class RedisLink:
    def __init__(self, url: str, deadline_s: float, client: aioredis.Redis | None = None) -> None:
        self.url = url
        self.safe_url = redact_url(url)
        self.deadline_s = deadline_s
        self.client = client or make_client(url)
        self.skew_s = 0.0  # Redis clock minus ours
        self.down_since: float | None = None
        self.outages = 0
        self.refused: set[str] = set()  # operations whose ResponseError was logged
        self.fatal: RedisRefused | None = None  # set once Redis refused us for good

    async def connect(self) -> None:
        """First contact, retried until the deadline: a Worker may start before Redis."""
        started = time.monotonic()
        delay = 0.2
        while True:
            try:
                await self.client.ping()
                await self.sync_clock()
                log.info("connected to Redis at %s", self.safe_url)
                return
            except AuthenticationError as exc:  # a ConnectionError subclass, but retrying will not help
                raise RedisGone(f"Redis at {self.safe_url} refused us: {exc}") from None
            except NoPermissionError as exc:
                raise self.refusal("connecting", exc) from None
            except TRANSIENT as exc:
                tls = tls_refusal(exc)
                if tls is not None:  # nor will it help with certificates that do not fit
                    raise RedisGone(f"Redis at {self.safe_url}: {tls}") from None
                if time.monotonic() - started > self.deadline_s:
                    raise RedisGone(f"cannot reach Redis at {self.safe_url}: {exc}") from None
                if delay == 0.2:
                    log.warning("cannot reach Redis at %s yet (%s); retrying", self.safe_url, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except RedisError as exc:  # authentication, ACL, TLS: retrying will not help
                if "DB index" in str(exc):  # the URL's database: bad input, found only now
                    raise InvalidOption(
                        "--redis-url", self.safe_url, f"Redis has no such database ({exc}): use /0 or another it has."
                    ) from None
                raise RedisGone(f"Redis at {self.safe_url} refused us: {exc}") from None

    async def sync_clock(self) -> None:
        t0 = time.time()
        secs, usecs = await self.client.time()
        t1 = time.time()
        self.skew_s = secs + usecs / 1e6 - (t0 + t1) / 2

    def now(self) -> float:
        """The gaggle's clock: Redis time, so hosts with skewed clocks agree on start times."""
        return time.time() + self.skew_s

    def local(self, gaggle_time: float) -> float:
        return gaggle_time - self.skew_s

    def refusal(self, what: str, exc: BaseException) -> RedisRefused:
        """The one line for a permission Redis will never grant: what was refused and the fix.
        Remembered in ``fatal``, so every task of the process can see it and stop."""
        if self.fatal is None:
            text = str(exc)
            if isinstance(exc, NoPermissionError) and not text.startswith("NOPERM"):
                text = f"NOPERM {text}"  # redis-py strips the code; keep it, it is what to search for
            self.fatal = RedisRefused(f"Redis at {self.safe_url} refused {what}: {text}; {ACL_FIX}")
        return self.fatal

    def note_refused(self, what: str, exc: BaseException) -> None:
        """A command refused for a passing reason (a key of the wrong type): logged once per operation."""
        if what not in self.refused:
            self.refused.add(what)
            log.warning("Redis refused a command while %s: %s; ignoring it", what, exc)

    def replies(self, what: str, results: list[Any]) -> list[Any]:
        """A pipeline's replies (``execute(raise_on_error=False)``): a permission error stops the
        process; any other refusal stays in the list for the caller, who treats it as no news or
        repairs the key it owns."""
        for r in results:
            if is_permission_error(r):
                raise self.refusal(what, r)
        return results

    async def rewrite_hash(self, key: str, mapping: dict[Any, Any], ttl_s: int, what: str) -> None:
        """A hash this process owns held another kind of value (junk): replace it whole."""
        log.warning("%s held another kind of value: deleted, written again", what)
        async with self.client.pipeline(transaction=False) as p:
            p.delete(key)
            p.hset(key, mapping=mapping)
            p.expire(key, ttl_s)
            self.replies(f"rewriting {what}", await p.execute(raise_on_error=False))

    async def attempt(self, what: str, call: Callable[[], Awaitable[T]]) -> T | None:
        try:
            result = await call()
        except AuthenticationError as exc:  # a ConnectionError, but a password Redis stopped taking
            raise self.refusal(what, exc) from None
        except TRANSIENT as exc:
            self._down(what, exc)
            return None
        except ResponseError as exc:
            if is_permission_error(exc):  # an ACL never changes its mind by itself: stop, say why
                raise self.refusal(what, exc) from None
            # A key of the wrong type (say, written with redis-cli): log it once per operation
            # and carry on; its owner repairs it, a reader takes it as no news.
            self.note_refused(what, exc)
            return None
        if self.down_since is not None:
            log.warning("Redis is back after %.1fs", time.monotonic() - self.down_since)
            self.down_since = None
        return result

    def _down(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            self.outages += 1
            log.warning("Redis unreachable while %s (%s); the load goes on, retrying", what, exc or type(exc).__name__)
        elif now - self.down_since > self.deadline_s:
            raise RedisGone(
                f"Redis at {self.safe_url} has been unreachable for {now - self.down_since:.0f}s; giving up"
            )

    @property
    def up(self) -> bool:
        return self.down_since is None

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except Exception:  # closing a dead connection must not mask the run's result
            pass


class Wakeup:
    """Pub/sub on the control channel as a wake-up only: messages may be lost,
    so listeners always re-read keys after waking (or after a poll interval)."""

    def __init__(self, link: RedisLink, channel: str) -> None:
        self.link = link
        self.channel = channel
        self.event = asyncio.Event()
        self.words: list[bytes] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        while True:
            pubsub = self.link.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and isinstance(msg.get("data"), bytes):
                        self.words.append(msg["data"])
                        self.event.set()
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if is_permission_error(exc):  # the ACL lacks our channel: final, like any NOPERM
                    self.link.refusal(f"subscribing to {self.channel}", exc)
                    self.event.set()
                    return
                log.debug("control channel listener: %s; resubscribing", exc)
            except Exception as exc:  # reconnect below; decisions never depend on this
                log.debug("control channel listener: %s; resubscribing", exc)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass
            await asyncio.sleep(1.0)

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except TimeoutError:
            pass
        self.event.clear()

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)


async def run_linked(url: str, deadline_s: float, body: Callable[[RedisLink], Awaitable[int]]) -> int:
    """Connect, run ``body``, close: the one place a Manager's or Worker's Redis trouble
    becomes a LoadTestError (one ``Error:`` line and exit code 1, no traceback)."""
    link = RedisLink(url, deadline_s)
    try:
        await link.connect()
        return await body(link)
    except RedisGone as exc:
        raise LoadTestError(str(exc)) from None
    except ResponseError as exc:  # e.g. an ACL refusal outside ``attempt``
        if is_permission_error(exc):
            raise LoadTestError(str(link.refusal("a command", exc))) from None
        raise LoadTestError(f"Redis at {link.safe_url} refused a command: {exc}") from None
    finally:
        await link.close()


async def one_shot(url: str, timeout_s: float, body: Callable[[RedisLink], Awaitable[T]],
                   total_s: float | None = None) -> T:  # fmt: skip
    """A short command (``status``, ``control``): connect within ``timeout_s``, run ``body``
    within ``total_s`` (default ``timeout_s``), close. Redis trouble becomes a LoadTestError:
    one line, exit 1, whatever went wrong and however long Redis kept quiet."""
    link = RedisLink(url, deadline_s=timeout_s)

    async def go() -> T:
        await asyncio.wait_for(link.connect(), timeout_s)
        return await body(link)

    try:
        return await asyncio.wait_for(go(), total_s if total_s is not None else timeout_s)
    except TimeoutError:
        raise LoadTestError(f"cannot reach Redis at {link.safe_url}: no answer within {timeout_s:g}s") from None
    except RedisGone as exc:
        raise LoadTestError(str(exc)) from None
    except TRANSIENT as exc:
        raise LoadTestError(f"cannot reach Redis at {link.safe_url}: {exc}") from None
    except ResponseError as exc:  # e.g. an ACL user without a command this needs
        raise LoadTestError(f"Redis at {link.safe_url} refused a command: {exc}") from None
    finally:
        await link.close()

