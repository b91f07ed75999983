"""Users share one connection pool per run and keep their own cookies (a real aiohttp app)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from goose_redis import Scenario, Transaction, User
from goose_redis.metrics import Metrics
from goose_redis.pool import HttpPool
from goose_redis.recorder import Recorder


async def _noop(user: User) -> None:
    return None


SCENARIO = Scenario("Pool").register(Transaction(_noop))


@asynccontextmanager
async def login_site() -> AsyncIterator[tuple[str, list[int]]]:
    """A site whose logins answer a redirect that sets the session cookie (as Drupal's
    login form does). Yields its URL and the client port of every request it served."""
    peers: list[int] = []

    def seen(request: web.Request) -> None:
        peername = request.transport.get_extra_info("peername") if request.transport else None
        peers.append(peername[1] if peername else -1)

    async def login_post(request: web.Request) -> web.StreamResponse:
        seen(request)
        form = await request.post()
        resp = web.HTTPSeeOther("/home")
        resp.set_cookie("sid", str(form["name"]))
        raise resp

    async def login_get(request: web.Request) -> web.StreamResponse:
        seen(request)
        resp = web.HTTPFound("/home")
        resp.set_cookie("sid", request.query["as"])
        raise resp

    async def home(request: web.Request) -> web.Response:
        seen(request)
        return web.Response(text=f"hello {request.cookies.get('sid', 'anonymous')}")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query["ms"]) / 1000)
        return web.Response(text="slow")

    app = web.Application()
    app.router.add_post("/login", login_post)
    app.router.add_get("/login", login_get)
    app.router.add_get("/home", home)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)  # slow handlers end with the test
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", peers
    finally:
        await runner.cleanup()


def _user(index: int, host: str, pool: HttpPool | None) -> User:
    return User(index, SCENARIO, 0, host, Recorder(Metrics()), timeout_s=10, pool=pool)


def test_users_on_one_pool_keep_their_own_cookies_through_login_redirects() -> None:
    async def drive() -> tuple[list[str], list[int], bool]:
        pool = HttpPool(10)
        async with login_site() as (host, peers):
            alice, bob, anon = (_user(i, host, pool) for i in range(3))
            try:
                texts = []
                # The cookie comes on the redirect response; the followed request must carry it.
                texts.append((await alice.post_form("/login", {"name": "alice"})).text)
                texts.append((await bob.get("/login", params={"as": "bob"})).text)
                texts.append((await anon.get("/home")).text)
                texts.append((await alice.get("/home")).text)
                texts.append((await bob.get("/home")).text)
                shared = alice.session.connector is bob.session.connector is pool.connector
            finally:
                for u in (alice, bob, anon):
                    await u.close()
                await pool.close()
        return texts, peers, shared

    texts, peers, shared = asyncio.run(drive())
    assert texts == ["hello alice", "hello bob", "hello anonymous", "hello alice", "hello bob"]
    assert shared
    # One request at a time: every request, whoever made it, went over the same kept-alive connection.
    assert len(peers) == 7 and len(set(peers)) == 1, peers


def test_a_user_without_a_pool_makes_and_closes_its_own() -> None:
    async def drive() -> tuple[str, bool, bool]:
        async with login_site() as (host, _):
            user = _user(0, host, None)
            text = (await user.get("/login", params={"as": "solo"})).text
            connector = user.session.connector
            await user.close()
            assert connector is not None
            return text, connector.closed, user._session is None

    text, closed, dropped = asyncio.run(drive())
    assert text == "hello solo"
    assert closed and dropped


def test_creating_a_user_opens_nothing() -> None:
    async def drive() -> tuple[bool, bool]:
        pool = HttpPool(10)
        users = [_user(i, "http://127.0.0.1:1", pool) for i in range(1000)]
        opened = any(u._session is not None for u in users) or pool._connector is not None
        for u in users:
            await u.close()  # closing a user that never sent a request is a no-op
        await pool.close()
        return opened, pool._connector is None

    opened, still_none = asyncio.run(drive())
    assert not opened and still_none


def test_the_pool_times_out_overdue_requests_and_only_those() -> None:
    async def drive() -> tuple[list[tuple[bool, str | None, float]], int]:
        pool = HttpPool(0.3)
        async with login_site() as (host, _):
            users = [_user(i, host, pool) for i in range(3)]
            try:
                results = await asyncio.gather(
                    users[0].get("/slow", params={"ms": "5000"}),
                    users[1].get("/slow", params={"ms": "5000"}),
                    users[2].get("/home"),
                )
                # The user that timed out goes on with a new request on the same pool.
                again = await users[0].get("/home")
            finally:
                for u in users:
                    await u.close()
                await pool.close()
        return [(r.ok, r.error, r.elapsed_ms) for r in results], again.status

    results, again = asyncio.run(drive())
    for ok, error, elapsed_ms in results[:2]:
        assert (ok, error) == (False, "timeout after 0.3s")
        assert 300 <= elapsed_ms < 5000
    assert results[2][:2] == (True, None)
    assert again == 200


def test_cancelling_a_user_mid_request_is_not_taken_for_a_timeout() -> None:
    async def drive() -> tuple[bool, int]:
        pool = HttpPool(30)
        async with login_site() as (host, _):
            user = _user(0, host, pool)
            task = asyncio.create_task(user.get("/slow", params={"ms": "5000"}))
            while not pool.deadlines.running:  # the request is in flight
                await asyncio.sleep(0.01)
            task.cancel()
            cancelled = False
            try:
                await task
            except asyncio.CancelledError:
                cancelled = True
            await user.close()
            await pool.close()
            return cancelled, len(pool.deadlines.running) + len(pool.deadlines.fired)

    cancelled, left = asyncio.run(drive())
    assert cancelled and left == 0
