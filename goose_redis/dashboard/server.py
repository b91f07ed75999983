"""The live dashboard's web server: one page, its static files and a small JSON API.

The server keeps no state of its own: every request asks its *source* (a gaggle's Redis,
or the standalone run it lives in), so it can be restarted at any time and several can
serve one gaggle. Routes:

- ``GET /``: the page; ``GET /static/{app.js,app.css}``: its script and style (no CDN, no
  other origin: the Content-Security-Policy allows this origin only);
- ``GET /api/snapshot``: the live view (never needs the gaggle's secret);
- ``POST /api/command``: ``{"command": "users", "value": "6"}`` -> ``{"ok", "said", "error"}``;
- ``GET /api/report``: the final JSON report, once the run is over (404 before).

A command changes a load test, so a browser must not be tricked into sending one: POST
takes ``application/json`` only (a cross-site form cannot send it without a preflight this
server never grants), an ``Origin`` must be this server's, and on a loopback address the
``Host`` must be a loopback name too (a DNS-rebinding page arrives with its own host name).
"""

from __future__ import annotations

import ipaddress
import logging
from importlib import resources
from typing import Any, Protocol

import orjson
from aiohttp import web

from ..commands import Outcome, check_command
from ..errors import InvalidOption

log = logging.getLogger("goose_redis.dashboard")

STATIC = {"app.js": "text/javascript", "app.css": "text/css"}
MAX_BODY = 16 * 1024
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class Source(Protocol):
    """Where the dashboard's figures come from and where its commands go."""

    async def view(self) -> dict[str, Any]: ...

    async def command(self, command: str, value: str | None) -> Outcome: ...

    async def report(self) -> bytes | None: ...


def _asset(name: str) -> bytes:
    return resources.files("goose_redis.dashboard").joinpath("static", name).read_bytes()


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """``127.0.0.1:8089`` -> ``127.0.0.1``; ``[::1]:8089`` -> ``::1``."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def make_app(source: Source, bind: str) -> web.Application:
    loopback = is_loopback(bind)

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if loopback and not is_loopback(_host_name(request.headers.get("Host", ""))):
            return web.json_response({"ok": False, "said": "this dashboard answers on its loopback address only"},
                                     status=403)  # fmt: skip
        response = await handler(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    async def page(_request: web.Request) -> web.Response:
        return web.Response(body=_asset("index.html"), content_type="text/html", charset="utf-8")

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=_asset(name), content_type=STATIC[name], charset="utf-8")

    async def snapshot(_request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(await source.view()), content_type="application/json")

    async def command(request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return _answer(Outcome(False, "send the command as application/json", "invalid"), 415)
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return _answer(Outcome(False, f"a page from {origin} may not steer this run", "refused"), 403)
        try:
            body = orjson.loads(await request.content.read(MAX_BODY + 1))
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("command"), str):
            return _answer(Outcome(False, 'expected {"command": "...", "value": "..."}', "invalid"), 400)
        raw_value = body.get("value")
        try:
            value = check_command(body["command"], None if raw_value is None else str(raw_value))
        except InvalidOption as exc:
            return _answer(Outcome(False, str(exc), "invalid"), 200)
        return _answer(await source.command(body["command"], value), 200)

    async def report(_request: web.Request) -> web.Response:
        data = await source.report()
        if data is None:
            return web.json_response({"ok": False, "said": "no report yet: the run is not over"}, status=404)
        return web.Response(body=data, content_type="application/json",
                            headers={"Content-Disposition": 'attachment; filename="goose-report.json"'})  # fmt: skip

    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/snapshot", snapshot)
    app.router.add_post("/api/command", command)
    app.router.add_get("/api/report", report)
    return app


def _answer(outcome: Outcome, status: int) -> web.Response:
    return web.json_response({"ok": outcome.ok, "said": outcome.said, "error": outcome.error}, status=status)


async def serve(app: web.Application, bind: str, port: int) -> tuple[web.AppRunner, str]:
    """Start serving; returns the runner (to clean up) and the page's URL (the real port for 0)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, bind, port)
    await site.start()
    addresses = runner.addresses
    real_port = int(addresses[0][1]) if addresses else port
    host = f"[{bind}]" if ":" in bind else bind
    return runner, f"http://{host}:{real_port}/"
