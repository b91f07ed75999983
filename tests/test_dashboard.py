"""The live dashboard in a real browser: Debian's Chromium driven by Playwright, against a real
gaggle (Manager, two Workers, the ``dashboard`` process, all CLI processes on a real Redis) and
against a standalone run serving its own page.

The page's figures must match ``goose-redis status --json`` (the same snapshot in Redis, and the
Workers' own heartbeats), a users change on the page must change the gaggle, and Stop must ask
first, then stop it. After the run the page shows the final tables and hands over the report.
Screenshots are kept in /tmp for a human to look at. The server's guards (JSON only, same origin,
loopback Host) are checked without a browser.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import CliProcess, CountingTarget, ProcessTracker, free_port, run_cli
from test_control import HOST, WAIT, users_lately
from test_gaggle import Gaggle, aggregated, finish, wait_until, write_load_test

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip
REFRESH_S = 2.0

needs_browser = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install -y chromium)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Page:
    """One browser page on the dashboard, recording console errors and any request off its origin."""

    def __init__(self, browser: Any, url: str) -> None:
        from playwright.sync_api import expect

        self.expect = expect
        self.url = url
        self.context = browser.new_context(viewport={"width": 1280, "height": 1300}, accept_downloads=True)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.elsewhere: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", self._request)
        self.page.goto(url)

    def _request(self, request: Any) -> None:
        if not request.url.startswith((self.url, "blob:", "data:")):
            self.elsewhere.append(request.url)

    def state(self, state: str, timeout_s: float = 30) -> None:
        self.page.wait_for_selector(f"body[data-state={state}]", timeout=timeout_s * 1000)

    def attr(self, selector: str, name: str) -> str:
        return str(self.page.get_attribute(selector, name) or "")

    def number(self, selector: str) -> float:
        return float(self.attr(selector, "data-value"))

    def steer(self, command: str, value: str, said: str) -> None:
        form = f"form[data-command={command}]"
        self.page.fill(f"{form} input", value)
        self.page.click(f"{form} button")
        self.expect(self.page.locator("#said")).to_contain_text(said)

    def shot(self, name: str) -> None:
        path = Path("/tmp") / name
        self.page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 20_000

    def close(self) -> None:
        self.context.close()


def dashboard(procs: ProcessTracker, g: Gaggle) -> tuple[CliProcess, str]:
    port = free_port()
    proc = procs.start(["dashboard", "--redis-url", g.redis_url, "--gaggle", g.name, "--port", str(port)])
    line = proc.stdout.wait_for(r"dashboard of gaggle", 20)
    url = f"http://127.0.0.1:{port}/"
    assert line.endswith(url), line
    return proc, url


def status(g: Gaggle) -> dict[str, Any]:
    result = run_cli(["status", "--json", "--redis-url", g.redis_url, "--gaggle", g.name], timeout=30)
    assert result.returncode == 0, result
    return dict(json.loads(result.stdout))


@needs_browser
def test_the_dashboard_of_a_gaggle(
    browser: Any, procs: ProcessTracker, redis_url: str, tmp_path: Path, fresh_target: CountingTarget
) -> None:
    g = Gaggle(procs, redis_url, tmp_path / "gaggle")
    g.load_test = write_load_test(g.workdir, wait=WAIT)
    manager = g.manager(fresh_target.url, 2, 2, "-r", "20", "-t", "120s", "--no-reset-metrics")
    workers = [g.worker(), g.worker()]
    _, url = dashboard(procs, g)
    page = Page(browser, url)
    page.state("running")
    page.expect(page.page.locator("#name")).to_have_text("gaggle 'default'")

    # The page shows the Manager's snapshot: the same one status --json reads (its "live" part),
    # so whenever both show the snapshot of one moment, every figure is the same.
    def same_as_status() -> bool:
        st = status(g)
        live = st["live"]
        if live is None or not live["requests"] or page.attr("body", "data-at") != str(live["at"]):
            return False  # no snapshot yet, one from before the first delta, or the page not on it yet
        assert page.number("#requests-total") == live["requests"]
        assert page.number("#users") == live["users"]
        for wid, figures in live["workers"].items():
            row = f"#workers tr[data-id='{wid}']"
            assert page.number(f"{row} td.users") == figures["users"]
            assert page.number(f"{row} td.requests") == figures["requests"]
        # ...and the Workers' own heartbeats agree on who runs how many users.
        assert {w["id"]: w["users"] for w in st["workers"]} == {k: v["users"] for k, v in live["workers"].items()}
        assert st["manager"]["state"] == "running"
        return True

    wait_until(same_as_status, 40, "the page and status --json showing one snapshot", interval=0.2)

    page.steer("users", "4", "users -> 4 at 20/s")
    wait_until(lambda: sum(w["users"] or 0 for w in status(g)["workers"]) == 4, 20, "4 users in the gaggle")
    wait_until(lambda: users_lately(fresh_target, 300) == {0, 1, 2, 3}, 20, "the target seeing users 0 to 3")
    page.expect(page.page.locator("#users")).to_have_attribute("data-value", "4", timeout=15_000)
    page.expect(page.page.locator("#events tbody tr")).to_have_count(1)
    page.expect(page.page.locator("#chart-users path.line")).to_have_count(1)
    page.shot("goose-dashboard-gaggle.png")

    page.page.click("#stop")  # asks first: nothing is stopped yet
    page.expect(page.page.locator("#confirm-stop")).to_be_visible()
    before = fresh_target.total()
    fresh_target.wait_for_hits(before + 20, timeout=10)
    assert manager.returncode is None
    page.page.click("#stop-yes")
    finish(manager, workers, timeout=60)
    assert f"stopping the gaggle: stop command (by dashboard on {HOST})" in manager.stderr.text()

    page.state("done")
    page.expect(page.page.locator("#final")).to_be_visible(timeout=15_000)
    page.expect(page.page.locator("#requests-title")).to_have_text("Per request (final, merged)")
    report = g.report()
    page.expect(page.page.locator("#requests tfoot td.count")).to_have_attribute(
        "data-value", str(aggregated(report))
    )
    with page.page.expect_download() as download:
        page.page.click("#report-link")
    offered = json.loads(Path(download.value.path()).read_text())
    assert offered["aggregated"]["count"] == aggregated(report) == fresh_target.completed_total()
    assert [e["command"] for e in offered["events"]] == ["users", "stop"]
    assert page.page.locator("#transactions tbody tr").count() == 3
    page.shot("goose-dashboard-gaggle-done.png")
    assert page.errors == [] and page.elsewhere == []
    page.close()

    # Stateless: a dashboard started now serves the same final view.
    _, second = dashboard(procs, g)
    view = json.loads(urllib.request.urlopen(second + "api/snapshot", timeout=10).read())
    assert view["snapshot"]["state"] == "done" and view["report"] is True
    assert view["snapshot"]["totals"]["requests"] == aggregated(report)


@needs_browser
def test_the_dashboard_of_a_standalone_run(
    browser: Any, procs: ProcessTracker, tmp_path: Path, fresh_target: CountingTarget
) -> None:
    load_test = write_load_test(tmp_path, wait=WAIT)
    port = free_port()
    report_path = tmp_path / "report.json"
    run = procs.start(["-f", str(load_test), "--host", fresh_target.url, "-u", "2", "-r", "20", "-t", "120s",
                       "--no-reset-metrics", "--controller-port", str(port), "--no-autostart",
                       "--report-file", str(report_path)])  # fmt: skip
    run.stderr.wait_for("waiting for Start on", 20)
    page = Page(browser, f"http://127.0.0.1:{port}/")
    page.state("waiting")
    page.expect(page.page.locator("#name")).to_have_text("standalone run")
    page.expect(page.page.locator("#workers-section")).to_be_hidden()
    assert fresh_target.total() == 0
    page.steer("users", "3", "users -> 3 from the start")
    page.page.click("#start")
    page.state("running")
    wait_until(lambda: users_lately(fresh_target, 300) == {0, 1, 2}, 20, "three users sending")
    page.expect(page.page.locator("#users")).to_have_attribute("data-value", "3", timeout=15_000)
    page.shot("goose-dashboard-standalone.png")

    page.page.click("#stop")
    page.expect(page.page.locator("#confirm-stop")).to_be_visible()
    page.page.click("#stop-yes")
    assert run.wait(60) == 0, run.output()
    page.state("done", 10)
    page.expect(page.page.locator("#final")).to_be_visible()
    report = json.loads(report_path.read_text())
    assert aggregated(report) == fresh_target.completed_total()
    assert [e["command"] for e in report["events"]] == ["users", "start", "stop"]
    page.expect(page.page.locator("#requests tfoot td.count")).to_have_attribute(
        "data-value", str(aggregated(report))
    )
    with page.page.expect_download() as download:  # the report stays with the page after the process exits
        page.page.click("#report-link")
    assert json.loads(Path(download.value.path()).read_text())["aggregated"]["count"] == aggregated(report)
    page.expect(page.page.locator("#problem")).to_contain_text("its process has exited", timeout=10_000)
    assert page.errors == [] or all("Failed to fetch" in e or "ERR_CONNECTION" in e for e in page.errors)
    assert page.elsewhere == []
    page.close()


# -- the server's guards, without a browser ----------------------------------------------------


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        return exc.code, dict(json.loads(exc.read()))


def test_only_a_same_origin_json_post_steers(
    procs: ProcessTracker, tmp_path: Path, fresh_target: CountingTarget
) -> None:
    load_test = write_load_test(tmp_path, wait=WAIT)
    port = free_port()
    run = procs.start(["-f", str(load_test), "--host", fresh_target.url, "-u", "1", "-t", "60s",
                       "--controller-port", str(port), "--no-autostart"])  # fmt: skip
    run.stderr.wait_for("waiting for Start on", 20)
    api = f"http://127.0.0.1:{port}/api/command"
    json_type = {"Content-Type": "application/json"}
    start = json.dumps({"command": "start"}).encode()
    # A cross-site form can send text/plain without asking first: refused.
    assert _post(api, start, {"Content-Type": "text/plain"})[0] == 415
    assert _post(api, start, {**json_type, "Origin": "http://evil.example"})[0] == 403
    # A DNS-rebinding page reaches 127.0.0.1 under its own name: refused, reading too.
    assert _post(api, start, {**json_type, "Host": f"evil.example:{port}"})[0] == 403
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/snapshot", headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10)
    assert refused.value.code == 403
    assert _post(api, b"{not json", json_type)[0] == 400
    code, answer = _post(api, json.dumps({"command": "users", "value": "many"}).encode(), json_type)
    assert code == 200 and answer["ok"] is False and answer["error"] == "invalid"
    assert "The users command takes a whole number" in answer["said"]
    assert fresh_target.total() == 0
    # The page itself sends no-store, a strict Content-Security-Policy, and nothing from elsewhere.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
        csp = resp.headers["Content-Security-Policy"]
        html = resp.read().decode()
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "http://" not in html and "https://" not in html
    same_origin = {**json_type, "Origin": f"http://127.0.0.1:{port}"}
    stopped = {"ok": True, "said": "stopping the run", "error": None}
    assert _post(api, json.dumps({"command": "stop"}).encode(), same_origin) == (200, stopped)
    assert run.wait(30) == 0, run.output()
    assert "the run never started: stop command (by dashboard on" in run.stderr.text()
    assert fresh_target.total() == 0


def test_the_page_ships_its_own_small_script() -> None:
    """No library, no CDN: the script and the style are the package's own files, and small."""
    static = Path(__file__).resolve().parents[1] / "goose_redis" / "dashboard" / "static"
    assert sorted(p.name for p in static.iterdir()) == ["app.css", "app.js", "index.html"]
    for p in static.iterdir():
        text = p.read_text()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text, p
    assert (static / "app.js").stat().st_size < 30_000


def test_dashboard_options_are_checked_first() -> None:
    result = run_cli(["dashboard", "--port", "x"], timeout=60)
    assert result.returncode == 2 and result.stderr.strip().startswith('Error: InvalidOption { option: "--port"')
    result = run_cli(["dashboard", "--bind", "no such host!"], timeout=60)
    assert result.returncode == 2 and 'option: "--bind"' in result.stderr, result
