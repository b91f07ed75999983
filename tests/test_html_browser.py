"""The HTML report in a real browser: headless Chromium renders it offline, without console errors.

Skipped when Chromium is not installed (CI installs it: ``apt-get install -y chromium``).
The screenshot is kept at /tmp/goose-report-shot.png for a human to look at.
The Chromium plumbing is shared with the end-to-end report tests: ``tests/support/browser.py``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from support.browser import chromium_binary, console_lines, drawn_charts, outside_refs, png_size, run_chromium
from support.report_samples import full_report, sample_report

from goose_redis.report.html import render_html

SHOT_COPY = Path("/tmp/goose-report-shot.png")

pytestmark = pytest.mark.skipif(
    chromium_binary() is None, reason="chromium not installed (apt-get update && apt-get install -y chromium)"
)


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
    proc, _ = drawn_charts(tmp_path, report_page.as_uri())
    dom = proc.stdout
    assert "Per request metrics" in dom and "Aggregated" in dom
    # Nothing in the rendered DOM points off the page.
    assert outside_refs(dom) == []
    assert console_lines(proc.stderr, report_page) == []


def test_screenshot(tmp_path: Path, report_page: Path) -> None:
    shot = tmp_path / "shot.png"
    proc = run_chromium(tmp_path, report_page.as_uri(), f"--screenshot={shot}", "--window-size=1280,2400",
                        "--hide-scrollbars")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = shot.read_bytes()
    assert png_size(data) == (1280, 2400)
    assert len(data) > 50_000  # a blank page compresses to a few kB
    assert console_lines(proc.stderr, report_page) == []
    try:
        shutil.copyfile(shot, SHOT_COPY)
    except OSError:
        pass  # the copy is a convenience for humans, not part of the check


def test_full_report_renders_with_hover_titles(tmp_path: Path) -> None:
    """Every later addition (plan bands, event markers, sizes, corrected figures, exceptions)
    renders in Chromium, and each chart carries its hover titles in the live DOM."""
    page = tmp_path / "full.html"
    page.write_text(render_html(full_report()), encoding="utf-8")
    proc, charts = drawn_charts(tmp_path, page.as_uri())
    dom = proc.stdout
    for chart in charts:
        hover = re.search(r'<g class="hover">(.*?)</g>', chart.body, re.S)
        assert hover is not None, chart.key
        assert len(re.findall(r"<rect [^>]*><title>\d\d:\d\d[ \n]", hover.group(1))) == 60, chart.key
        assert 'class="marker"' in chart.body and "band-maintain" in chart.body
    for text in ("Exceptions", "KeyError", "Avg size", "Corrected for coordinated omission", "Test plan",
                 "Dropped iterations"):  # fmt: skip
        assert text in dom, text
    assert outside_refs(dom) == [] and "<script" not in dom
    assert console_lines(proc.stderr, page) == []
