"""A small, cheap stand-in for the Drupal 7 site that Goose's drupal example load-tests.

It serves what the example touches: a front page, node pages ``/node/{nid}`` (1..10000),
user pages ``/user/{uid}`` (1..5000), static assets, a login form with a hidden
``form_build_id``, a session cookie, and a comment form guarded by ``form_build_id`` and a
per-session ``form_token``. Pages are generated from the ids, so they are deterministic.

Accounts: ``user1`` .. ``user5000``, every one with the password ``DEMO_PASSWORD``.

Every request is counted in ``app["hits"]`` (a ``Counter``) under ``"METHOD /route-template"``,
e.g. ``"GET /node/{nid}"`` or ``"GET /misc/drupal.js"``; requests that match no route count
under ``"METHOD <unmatched>"`` so the counter stays bounded. The status of every answered
request is counted in ``DemoState.statuses``.

``GET /__hits`` answers those counters as JSON (``{"hits": {...}, "total": N, "statuses":
{"200": N, "302": N, ...}}``) and is not counted itself, so a load test run elsewhere (a
container, another host) can be checked against what the site really served. A client
that follows redirects records one request where the site answers two (the 3xx and the
page it points to): ``total`` minus the 3xx statuses is the number such a client counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import itertools
import re
import signal
import struct
import sys
import warnings
import zlib
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.web_exceptions import NotAppKeyWarning

MAX_NID = 10_000
MAX_UID = 5_000
DEMO_PASSWORD = "goose"
SESSION_COOKIE = "SESSgoosedemo"
LOGIN_FORM_ID = "user_login"
COMMENT_FORM_ID = "comment_node_article_form"
COMMENTS_KEPT_PER_NODE = 5
# Old sessions are dropped first; bounds memory in long runs with many logins.
MAX_SESSIONS = 100_000
# The counters as JSON; never counted itself.
HITS_PATH = "/__hits"

_USERNAME_RE = re.compile(r"user([1-9][0-9]*)")


@dataclass
class Comment:
    cid: int
    author: str
    subject: str
    body: str


@dataclass
class DemoState:
    secret: bytes
    hits: Counter[str] = field(default_factory=Counter)
    # status code -> requests answered with it
    statuses: Counter[int] = field(default_factory=Counter)
    # session id -> uid
    sessions: OrderedDict[str, int] = field(default_factory=OrderedDict)
    comments: dict[int, deque[Comment]] = field(default_factory=dict)
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


STATE: web.AppKey[DemoState] = web.AppKey("goose_demo_state", DemoState)


# --------------------------------------------------------------------------- static assets


def _png(rgb: tuple[int, int, int]) -> bytes:
    """A valid 1x1 PNG of one colour (a few dozen bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes([0, *rgb]))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


_CSS = "text/css"
_JS = "application/javascript"
_PNG = "image/png"

CSS_ASSETS = [
    "/modules/system/system.base.css",
    "/modules/system/system.theme.css",
    "/themes/bartik/css/style.css",
    "/sites/default/files/css/css_demo.css",
]
JS_ASSETS = [
    "/misc/jquery.js",
    "/misc/jquery.once.js",
    "/misc/drupal.js",
    "/sites/default/files/js/js_demo.js",
]
NODE_IMAGES = [f"/sites/default/files/field/image/demo-{i}.png" for i in range(8)]
LOGO = "/themes/bartik/logo.png"
FAVICON = "/misc/favicon.ico"
# Drupal adds a cache-busting query to css/js; clients must strip it to find the asset.
_ASSET_QUERY = "?goose7"


def _static_assets() -> dict[str, tuple[str, bytes]]:
    assets: dict[str, tuple[str, bytes]] = {}
    for path in CSS_ASSETS:
        assets[path] = (_CSS, f"/* {path} */\nbody {{ margin: 0; }}\n".encode())
    for path in JS_ASSETS:
        assets[path] = (_JS, f"/* {path} */\nvar goose = true;\n".encode())
    for i, path in enumerate(NODE_IMAGES):
        assets[path] = (_PNG, _png((30 * i % 256, 90, 200 - 20 * i)))
    assets[LOGO] = (_PNG, _png((0, 120, 60)))
    assets[FAVICON] = ("image/vnd.microsoft.icon", _png((255, 200, 0)))
    return assets


# --------------------------------------------------------------------------- tokens and sessions


def _mac(state: DemoState, *parts: str) -> str:
    return hmac.new(state.secret, "\x00".join(parts).encode(), hashlib.sha256).hexdigest()


def _new_form_build_id(state: DemoState, form_id: str) -> str:
    nonce = format(next(state.counter), "x")
    return f"form-{nonce}-{_mac(state, 'build', form_id, nonce)[:24]}"


def _valid_form_build_id(state: DemoState, form_id: str, value: str) -> bool:
    prefix, _, rest = value.partition("-")
    nonce, _, mac = rest.partition("-")
    if prefix != "form" or not nonce or not mac:
        return False
    return hmac.compare_digest(mac, _mac(state, "build", form_id, nonce)[:24])


def _form_token(state: DemoState, sid: str, form_id: str) -> str:
    # Bound to the session, like Drupal's drupal_get_token(): a token from another session fails.
    return _mac(state, "token", sid, form_id)[:32]


def _session(request: web.Request) -> tuple[str, int] | None:
    """(session id, uid) of a logged-in request, else None."""
    sid = request.cookies.get(SESSION_COOKIE)
    if not sid:
        return None
    uid = request.app[STATE].sessions.get(sid)
    return None if uid is None else (sid, uid)


def _new_session(state: DemoState, uid: int) -> str:
    sid = _mac(state, "session", str(next(state.counter)))[:40]
    state.sessions[sid] = uid
    while len(state.sessions) > MAX_SESSIONS:
        state.sessions.popitem(last=False)
    return sid


# --------------------------------------------------------------------------- rendering

_WORDS = (
    "goose gaggle flock honk wing feather pond migrate hatch nest waddle glide "
    "river reed meadow north south dawn dusk swift steady load test request"
).split()


def _words(seed: int, count: int) -> str:
    n = len(_WORDS)
    return " ".join(_WORDS[(seed * 7 + i * (seed % 5 + 1)) % n] for i in range(count))


def _head_assets() -> str:
    css = "\n".join(
        f'<link type="text/css" rel="stylesheet" href="{p}{_ASSET_QUERY}" media="all" />' for p in CSS_ASSETS
    )
    js = "\n".join(f'<script type="text/javascript" src="{p}{_ASSET_QUERY}"></script>' for p in JS_ASSETS)
    icon = f'<link rel="shortcut icon" href="{FAVICON}" type="image/vnd.microsoft.icon" />'
    return f"{icon}\n{css}\n{js}"


_HEAD_ASSETS = _head_assets()


def _page(request: web.Request, title: str, content: str, status: int = 200) -> web.Response:
    logged_in = _session(request)
    if logged_in is None:
        account = '<li><a href="/user">Log in</a></li>'
    else:
        uid = logged_in[1]
        account = f'<li><a href="/user/{uid}">My account</a></li><li><a href="/user/logout">Log out</a></li>'
    body = f"""<!DOCTYPE html>
<html lang="en"><head>
<meta charset="utf-8" />
<title>{html.escape(title)} | Goose Demo</title>
{_HEAD_ASSETS}
</head>
<body>
<div id="header"><a href="/" title="Home" rel="home" id="logo"><img src="{LOGO}" alt="Home" /></a>
<ul class="links secondary-menu">{account}</ul></div>
<div id="main"><h1 class="title">{html.escape(title)}</h1>
{content}
</div>
<div id="footer">Powered by a goose.</div>
</body></html>
"""
    return web.Response(text=body, status=status, content_type="text/html")


def _not_found(request: web.Request) -> web.Response:
    return _page(request, "Page not found", "<p>The requested page could not be found.</p>", status=404)


def _denied(request: web.Request, why: str) -> web.Response:
    return _page(request, "Access denied", f"<p>{html.escape(why)}</p>", status=403)


def _redirect(location: str) -> web.Response:
    # A plain 302 response (not a raised HTTPFound) so cookies can be set on it.
    return web.Response(status=302, headers={"Location": location})


def _int_param(request: web.Request, name: str, upper: int) -> int | None:
    value = int(request.match_info[name])
    return value if 1 <= value <= upper else None


# --------------------------------------------------------------------------- handlers


async def front_page(request: web.Request) -> web.Response:
    teasers = []
    for nid in range(1, 11):
        image = NODE_IMAGES[nid % len(NODE_IMAGES)]
        teasers.append(
            f'<div class="node-teaser"><h2><a href="/node/{nid}">{_words(nid, 3)}</a></h2>'
            f'<img src="{image}" alt="" /><p>{_words(nid, 20)}</p></div>'
        )
    content = '<p id="welcome">Welcome to the Goose demo site</p>\n' + "\n".join(teasers)
    return _page(request, "Welcome to the Goose demo site", content)


async def node_page(request: web.Request) -> web.Response:
    nid = _int_param(request, "nid", MAX_NID)
    if nid is None:
        return _not_found(request)
    image = NODE_IMAGES[nid % len(NODE_IMAGES)]
    comments = request.app[STATE].comments.get(nid, ())
    rendered = "\n".join(
        f'<div class="comment" id="comment-{c.cid}"><h3>{html.escape(c.subject)}</h3>'
        f'<p class="submitted">by {html.escape(c.author)}</p><p>{html.escape(c.body)}</p></div>'
        for c in comments
    )
    add = ""
    if _session(request) is not None:
        add = f'<p><a href="/comment/reply/{nid}">Add new comment</a></p>'
    content = (
        f'<div class="node" id="node-{nid}"><img src="{image}" alt="" />'
        f"<p>{_words(nid, 60)}</p></div>\n"
        f'<div id="comments"><h2>Comments</h2>\n{rendered}\n{add}</div>'
    )
    return _page(request, f"Node {nid}: {_words(nid, 3)}", content)


async def user_page(request: web.Request) -> web.Response:
    uid = _int_param(request, "uid", MAX_UID)
    if uid is None:
        return _not_found(request)
    content = (
        f'<div class="profile" id="user-{uid}"><h3>History</h3>'
        f"<p>Member for {uid % 52 + 1} weeks</p><p>{_words(uid + 7, 15)}</p></div>"
    )
    return _page(request, f"user{uid}", content)


def _login_form(request: web.Request, error: str = "") -> web.Response:
    build_id = _new_form_build_id(request.app[STATE], LOGIN_FORM_ID)
    message = f'<div class="messages error">{html.escape(error)}</div>' if error else ""
    content = f"""{message}
<form action="/user" method="post" id="user-login" accept-charset="UTF-8"><div>
<label for="edit-name">Username</label>
<input type="text" id="edit-name" name="name" value="" size="60" maxlength="60" />
<label for="edit-pass">Password</label>
<input type="password" id="edit-pass" name="pass" size="60" maxlength="128" />
<input type="hidden" name="form_build_id" value="{build_id}" />
<input type="hidden" name="form_id" value="{LOGIN_FORM_ID}" />
<input type="submit" id="edit-submit" name="op" value="Log in" />
</div></form>"""
    return _page(request, "User account", content)


async def login_form(request: web.Request) -> web.Response:
    logged_in = _session(request)
    if logged_in is not None:
        return _redirect(f"/user/{logged_in[1]}")
    return _login_form(request)


async def login_submit(request: web.Request) -> web.Response:
    state = request.app[STATE]
    form = await request.post()
    if form.get("form_id") != LOGIN_FORM_ID or not _valid_form_build_id(
        state, LOGIN_FORM_ID, str(form.get("form_build_id", ""))
    ):
        return _page(request, "Bad request", "<p>Invalid or missing form_build_id.</p>", status=400)
    match = _USERNAME_RE.fullmatch(str(form.get("name", "")))
    uid = int(match.group(1)) if match else 0
    if not 1 <= uid <= MAX_UID or not hmac.compare_digest(str(form.get("pass", "")), DEMO_PASSWORD):
        # Drupal answers 200 with the form again: callers must validate the page, not the status.
        return _login_form(request, "Sorry, unrecognized username or password.")
    sid = _new_session(state, uid)
    response = _redirect(f"/user/{uid}")
    response.set_cookie(SESSION_COOKIE, sid, path="/", httponly=True)
    return response


async def logout(request: web.Request) -> web.Response:
    logged_in = _session(request)
    if logged_in is not None:
        request.app[STATE].sessions.pop(logged_in[0], None)
    response = _redirect("/")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


def _comment_target(request: web.Request) -> tuple[int, str, int] | web.Response:
    """(node id, session id, uid) for the comment pages, or the page refusing them."""
    nid = _int_param(request, "nid", MAX_NID)
    if nid is None:
        return _not_found(request)
    logged_in = _session(request)
    if logged_in is None:
        return _denied(request, "You must log in to post comments.")
    return nid, *logged_in


async def comment_form(request: web.Request) -> web.Response:
    found = _comment_target(request)
    if isinstance(found, web.Response):
        return found
    nid, sid, uid = found
    state = request.app[STATE]
    build_id = _new_form_build_id(state, COMMENT_FORM_ID)
    token = _form_token(state, sid, COMMENT_FORM_ID)
    content = f"""<form action="/comment/reply/{nid}" method="post" id="comment-form"
 accept-charset="UTF-8"><div>
<label for="edit-subject">Subject</label>
<input type="text" id="edit-subject" name="subject" value="" size="60" maxlength="64" />
<label for="edit-comment-body">Comment</label>
<textarea id="edit-comment-body" name="comment_body[und][0][value]" cols="60" rows="5"></textarea>
<input type="hidden" name="form_build_id" value="{build_id}" />
<input type="hidden" name="form_token" value="{token}" />
<input type="hidden" name="form_id" value="{COMMENT_FORM_ID}" />
<input type="submit" id="edit-submit" name="op" value="Save" />
</div></form>"""
    return _page(request, f"Add new comment to node {nid}", content)


async def comment_submit(request: web.Request) -> web.Response:
    found = _comment_target(request)
    if isinstance(found, web.Response):
        return found
    nid, sid, uid = found
    state = request.app[STATE]
    form = await request.post()
    expected_token = _form_token(state, sid, COMMENT_FORM_ID)
    if form.get("form_id") != COMMENT_FORM_ID or not hmac.compare_digest(
        str(form.get("form_token", "")), expected_token
    ):
        return _denied(request, "The form has become outdated. Please reload the page.")
    if not _valid_form_build_id(state, COMMENT_FORM_ID, str(form.get("form_build_id", ""))):
        return _page(request, "Bad request", "<p>Invalid or missing form_build_id.</p>", status=400)
    body = str(form.get("comment_body[und][0][value]", "")).strip()
    if not body:
        return _page(request, "Bad request", "<p>Comment field is required.</p>", status=400)
    subject = str(form.get("subject", "")).strip()[:64] or body[:29]
    comment = Comment(next(state.counter), f"user{uid}", subject, body[:2000])
    state.comments.setdefault(nid, deque(maxlen=COMMENTS_KEPT_PER_NODE)).append(comment)
    return _redirect(f"/node/{nid}#comment-{comment.cid}")


def _asset_handler(content_type: str, body: bytes) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, headers={"Cache-Control": "max-age=300"})

    return handler


@web.middleware
async def _count_hits(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path == HITS_PATH:
        return await handler(request)
    state = request.app[STATE]
    resource = request.match_info.route.resource
    template = resource.canonical if resource is not None else "<unmatched>"
    state.hits[f"{request.method} {template}"] += 1
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # e.g. the router's 404 for an unmatched path
        state.statuses[exc.status] += 1
        raise
    state.statuses[response.status] += 1
    return response


async def hit_counts(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(
        {
            "hits": dict(state.hits),
            "total": sum(state.hits.values()),
            "statuses": {str(code): n for code, n in sorted(state.statuses.items())},
        }
    )


# --------------------------------------------------------------------------- app and runners


def make_app(secret: bytes = b"goose-redis-demo-site") -> web.Application:
    """Build the demo site. Counters and sessions live in the returned app."""
    app = web.Application(middlewares=[_count_hits])
    state = DemoState(secret=secret)
    app[STATE] = state
    with warnings.catch_warnings():
        # A plain str key is the documented test interface; aiohttp only recommends AppKey.
        warnings.simplefilter("ignore", NotAppKeyWarning)
        app["hits"] = state.hits
    r = app.router
    r.add_get("/", front_page)
    r.add_get(HITS_PATH, hit_counts)
    r.add_get(r"/node/{nid:\d+}", node_page)
    r.add_get("/user", login_form)
    r.add_post("/user", login_submit)
    r.add_get("/user/login", login_form)
    r.add_post("/user/login", login_submit)
    r.add_get("/user/logout", logout)
    r.add_get(r"/user/{uid:\d+}", user_page)
    r.add_get(r"/comment/reply/{nid:\d+}", comment_form)
    r.add_post(r"/comment/reply/{nid:\d+}", comment_submit)
    for path, (content_type, body) in _static_assets().items():
        r.add_get(path, _asset_handler(content_type, body))
    return app


def hits(app: web.Application) -> Counter[str]:
    """The hit counter of an app made by :func:`make_app` (same object as ``app["hits"]``)."""
    return app[STATE].hits


def _base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def start_demo_site(host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str]:
    """Serve a fresh demo site; port 0 picks a free one. Returns (runner, base URL).

    The app is ``runner.app``; stop with ``await runner.cleanup()``.
    """
    runner = web.AppRunner(make_app(), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    return runner, _base_url(host, bound_port)


def run_demo_site(host: str = "127.0.0.1", port: int = 8080, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve the demo site until SIGINT or SIGTERM (blocking).

    ``on_ready`` gets the base URL once the socket listens; by default the URL is printed
    to stderr.
    """

    async def serve() -> None:
        runner, url = await start_demo_site(host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            if on_ready is not None:
                on_ready(url)
            else:
                print(f"goose-redis demo site listening on {url}", file=sys.stderr, flush=True)
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await runner.cleanup()

    asyncio.run(serve())
