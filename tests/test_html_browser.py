"""The HTML report in a real browser: headless Chromium renders it offline, without console errors.

Skipped when Chromium is not installed (CI installs it: ``apt-get install -y chromium``).
The screenshot is kept at /tmp/goose-report-shot.png for a human to look at.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support.report_samples import sample_report

from goose_redis.report.html import render_html

SHOT_COPY = Path("/tmp/goose-report-shot.png")
TIMEOUT_S = 30


def chromium_binary() -> str | None:
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM = chromium_binary()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get update && apt-get install -y chromium)"
)


def run_chromium(tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    args = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}",
        # No name resolves: a page that reached out could not load anything anyway.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr", "--v=0",
        *extra, url,
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)


def console_lines(stderr: str, page: Path) -> list[str]:
    """Console messages and uncaught errors of ``page`` in Chromium's log."""
    return [
        line for line in stderr.splitlines()
        if ("CONSOLE" in line and page.name in line) or "Uncaught" in line
    ]


def test_console_capture_works(tmp_path: Path) -> None:
    """Guards the check below: this Chromium does report console errors on stderr."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><p>x</p><script>console.error('boom'); missingFn();</script>")
    proc = run_chromium(tmp_path, page.as_uri(), "--dump-dom")
    lines = console_lines(proc.stderr, page)
    assert any("boom" in line for line in lines), proc.stderr[-2000:]
    assert any("Uncaught" in line for line in lines)


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    page = tmp_path_factory.mktemp("html") / "report.html"
    page.write_text(render_html(sample_report()), encoding="utf-8")
    return page


def test_dom_has_charts_and_no_console_errors(tmp_path: Path, report_page: Path) -> None:
    proc = run_chromium(tmp_path, report_page.as_uri(), "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    charts = re.findall(r'<svg class="chart" data-chart="([a-z]+)"(.*?)</svg>', dom, re.S)
    assert [key for key, _ in charts] == ["users", "throughput", "latency", "rows"]
    for key, body in charts:
        paths = re.findall(r'<path class="line" d="(M[^"]+)"', body)
        assert paths and all("L" in d for d in paths), key
    assert "Per request metrics" in dom and "Aggregated" in dom
    # Nothing in the rendered DOM points off the page.
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", dom, re.I)
    assert [r for r in refs if not r.startswith(("#", "data:"))] == []
    assert console_lines(proc.stderr, report_page) == []


def test_screenshot(tmp_path: Path, report_page: Path) -> None:
    shot = tmp_path / "shot.png"
    proc = run_chromium(tmp_path, report_page.as_uri(), f"--screenshot={shot}", "--window-size=1280,2400",
                        "--hide-scrollbars")
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 2400)
    assert len(data) > 50_000  # a blank page compresses to a few kB
    assert console_lines(proc.stderr, report_page) == []
    try:
        shutil.copyfile(shot, SHOT_COPY)
    except OSError:
        pass  # the copy is a convenience for humans, not part of the check
