"""The demo site behaves like the Drupal pages the example load-tests, driven by a plain client."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest
from support import REPO_ROOT, LineCollector, ProcessTracker, free_port

from goose_redis.demo_site import DEMO_PASSWORD, hits, start_demo_site

ASSET_RE = re.compile(r'(?:src|href)="(/[^"]+\.(?:css|js|png|ico)(?:\?[^"]*)?)"')
HIDDEN_RE = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


def _session() -> aiohttp.ClientSession:
    # unsafe=True: aiohttp drops cookies from IP-address hosts otherwise.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _text(session: aiohttp.ClientSession, method: str, url: str, **kw: object) -> tuple[int, str]:
    async with session.request(method, url, **kw) as r:  # type: ignore[arg-type]
        return r.status, await r.text()


async def _login(session: aiohttp.ClientSession, base: str, username: str) -> str:
    status, page = await _text(session, "GET", f"{base}/user")
    assert status == 200
    fields = dict(HIDDEN_RE.findall(page))
    form = {"name": username, "pass": DEMO_PASSWORD, "form_build_id": fields["form_build_id"]}
    async with session.post(f"{base}/user", data={**form, "form_id": "user_login"}) as r:
        assert r.history and r.history[0].status == 302
        assert r.status == 200
        return await r.text()


def test_pages_and_assets() -> None:
    async def drive() -> Counter[str]:
        runner, base = await start_demo_site()
        try:
            async with _session() as s:
                status, front = await _text(s, "GET", f"{base}/")
                assert status == 200
                assert "Welcome" in front and "Log in" in front and "Log out" not in front
                assets = sorted(set(ASSET_RE.findall(front)))
                assert len(assets) >= 10
                assert any("?" in a for a in assets)  # cache-busting query like Drupal's
                for asset in assets:
                    async with s.get(f"{base}{asset}") as r:
                        assert r.status == 200, asset
                        assert len(await r.read()) > 0

                for path, expected in [
                    ("/node/1", 200),
                    ("/node/10000", 200),
                    ("/node/0", 404),
                    ("/node/10001", 404),
                    ("/node/abc", 404),
                    ("/user/5000", 200),
                    ("/user/5001", 404),
                ]:
                    status, page = await _text(s, "GET", f"{base}{path}")
                    assert status == expected, path
                    if status == 200:
                        assert ASSET_RE.search(page), f"{path} links no assets"

                _, node = await _text(s, "GET", f"{base}/node/42")
                _, again = await _text(s, "GET", f"{base}/node/42")
                assert node == again  # deterministic
                assert "Add new comment" not in node  # anonymous users cannot comment
            return Counter(hits(runner.app))
        finally:
            await runner.cleanup()

    counted = asyncio.run(drive())
    assert counted["GET /"] == 1
    assert counted["GET /misc/drupal.js"] == 1
    assert counted["GET /node/{nid}"] == 6  # 0, 1, 10000, 10001, and 42 twice
    assert counted["GET /user/{uid}"] == 2
    assert counted["GET <unmatched>"] == 1  # /node/abc


def test_login_and_comment_flow() -> None:
    async def drive() -> Counter[str]:
        runner, base = await start_demo_site()
        try:
            async with _session() as s, _session() as other:
                # Anonymous: no comment form, posting is refused.
                assert (await _text(s, "GET", f"{base}/comment/reply/7"))[0] == 403
                assert (await _text(s, "POST", f"{base}/comment/reply/7", data={"x": "y"}))[0] == 403

                # Login: bad token and bad password are refused.
                _, page = await _text(s, "GET", f"{base}/user")
                build_id = dict(HIDDEN_RE.findall(page))["form_build_id"]
                bad_token = {"name": "user7", "pass": DEMO_PASSWORD, "form_id": "user_login"}
                status, _ = await _text(s, "POST", f"{base}/user", data={**bad_token, "form_build_id": "form-1-x"})
                assert status == 400
                wrong = {"name": "user7", "pass": "nope", "form_id": "user_login", "form_build_id": build_id}
                status, page = await _text(s, "POST", f"{base}/user", data=wrong)
                assert status == 200 and "unrecognized username" in page and "Log out" not in page

                page = await _login(s, base, "user7")
                assert "Log out" in page and "user7" in page
                async with s.get(f"{base}/user") as r:  # logged in: /user goes to the own page
                    assert r.url.path == "/user/7"

                # Comment form and its tokens.
                status, form_page = await _text(s, "GET", f"{base}/comment/reply/7")
                assert status == 200 and "Log out" in form_page
                fields = dict(HIDDEN_RE.findall(form_page))
                assert set(fields) == {"form_build_id", "form_token", "form_id"}
                body = "Honk honk, a comment"
                post = {"subject": "Hi", "comment_body[und][0][value]": body, "op": "Save"}
                url = f"{base}/comment/reply/7"

                no_token = {k: v for k, v in fields.items() if k != "form_token"}
                assert (await _text(s, "POST", url, data={**post, **no_token}))[0] == 403
                assert (await _text(s, "POST", url, data={**post, **fields, "form_token": "0" * 32}))[0] == 403
                no_build_id = {k: v for k, v in fields.items() if k != "form_build_id"}
                assert (await _text(s, "POST", url, data={**post, **no_build_id}))[0] == 400
                empty = {**post, **fields, "comment_body[und][0][value]": " "}
                assert (await _text(s, "POST", url, data=empty))[0] == 400

                # Another session's token is refused: tokens are bound to the session.
                await _login(other, base, "user8")
                assert (await _text(other, "POST", url, data={**post, **fields}))[0] == 403

                async with s.post(url, data={**post, **fields}) as r:
                    assert r.history[0].status == 302
                    assert r.status == 200 and r.url.path == "/node/7"
                    node = await r.text()
                assert body in node and "by user7" in node

                # Logging out ends the session.
                status, page = await _text(s, "GET", f"{base}/user/logout")
                assert status == 200 and "Log in" in page and "Log out" not in page
                assert (await _text(s, "GET", f"{base}/comment/reply/7"))[0] == 403
            return Counter(hits(runner.app))
        finally:
            await runner.cleanup()

    counted = asyncio.run(drive())
    assert counted["POST /comment/reply/{nid}"] == 7
    assert counted["POST /user"] == 4


def test_run_demo_site_serves_until_sigterm() -> None:
    port = free_port()
    code = f"from goose_redis.demo_site import run_demo_site; run_demo_site('127.0.0.1', {port})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    tracker = ProcessTracker()
    tracker.track(proc)
    try:
        assert proc.stderr is not None
        err = LineCollector(proc.stderr, "stderr")
        line = err.wait_for("listening on", timeout=20)
        assert line.endswith(f"http://127.0.0.1:{port}")

        async def get() -> int:
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/node/3") as r:
                return r.status

        assert asyncio.run(get()) == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, err.text()
    finally:
        tracker.kill_all()


# ---------------------------------------------------------------------------- the example


def _load_example() -> ModuleType:
    path = Path(REPO_ROOT, "examples", "drupal_loadtest.py")
    spec = importlib.util.spec_from_file_location("drupal_loadtest_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_transactions_pass_against_the_demo_site(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each transaction of the example, run once by a real User; no request may fail."""
    from goose_redis.metrics import Metrics
    from goose_redis.recorder import Recorder
    from goose_redis.user import User

    example = _load_example()

    async def drive(password: str) -> tuple[Metrics, Counter[str]]:
        monkeypatch.setattr(example, "PASSWORD", password)
        metrics = Metrics()
        recorder = Recorder(metrics)
        runner, base = await start_demo_site()
        try:
            for index, scenario in enumerate([example.anon, example.auth]):
                user = User(index, scenario, index, base, recorder, timeout_s=10)
                try:
                    for transaction in scenario.transactions:  # on_start login first
                        user.transaction_name = transaction.display_name
                        await transaction.function(user)
                        user.flush()
                finally:
                    await user.close()
            return metrics, Counter(hits(runner.app))
        finally:
            await runner.cleanup()

    metrics, counted = asyncio.run(drive(DEMO_PASSWORD))
    failed = {key: row.errors for key, row in metrics.requests.items() if row.fail_count}
    assert failed == {}
    names = {name for _, name in metrics.requests}
    assert {"(Anon) static asset", "(Anon) node page", "(Auth) login", "(Auth) post comment"} <= names
    assert counted["POST /comment/reply/{nid}"] == 1
    assert counted["GET /misc/drupal.js"] == 6  # three pages for each of the two users

    # A wrong password: the login POST answers 200, and the example's validation fails it.
    metrics, _ = asyncio.run(drive("wrong"))
    login = metrics.requests[("POST", "(Auth) login")]
    assert login.fail_count == 1
    assert any("no 'Log out' link" in error for error in login.errors)
