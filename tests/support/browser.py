"""Headless Chromium for checking HTML reports: render a page, dump its DOM, take a screenshot.

Chromium runs with ``--headless --no-sandbox --disable-gpu``, a throw-away profile and
every host name mapped to nothing, so a page that tried to reach out could load nothing.
Console messages and uncaught errors land on Chromium's stderr (``--enable-logging=stderr``);
:func:`console_lines` picks out those of one page.

Tests skip when Chromium is missing (``chromium_binary() is None``); CI installs it
(``apt-get install -y chromium``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CHROMIUM_TIMEOUT_S = 30.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def chromium_binary() -> str | None:
    """Path of Chromium, or None when it is not installed."""
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def run_chromium(profile_dir: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium once on ``url`` with ``extra`` switches (``--dump-dom``, ``--screenshot=...``).

    ``profile_dir`` is created if needed and used as the throw-away user-data dir.
    """
    binary = chromium_binary()
    assert binary is not None, "chromium is not installed"
    profile = profile_dir / "profile"
    profile.mkdir(parents=True, exist_ok=True)
    args = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}",
        # No name resolves: a page that reached out could not load anything anyway.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr", "--v=0",
        *extra, url,
    ]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, stdin=subprocess.DEVNULL)


def console_lines(stderr: str, page: Path) -> list[str]:
    """Console messages and uncaught errors of ``page`` in Chromium's log."""
    return [line for line in stderr.splitlines() if ("CONSOLE" in line and page.name in line) or "Uncaught" in line]


@dataclass(frozen=True)
class ChartDom:
    key: str  # the data-chart attribute
    body: str  # the markup inside the <svg>
    line_paths: list[str]  # the "d" of every <path class="line">

    @property
    def drew(self) -> bool:
        """At least one line with two or more points (an ``M`` followed by an ``L``)."""
        return bool(self.line_paths) and all("L" in d for d in self.line_paths)


def charts_in(dom: str) -> list[ChartDom]:
    """The report's charts (``<svg class="chart" data-chart=...>``) in a DOM dump, in page order."""
    out = []
    for key, body in re.findall(r'<svg class="chart" data-chart="([a-z]+)"(.*?)</svg>', dom, re.S):
        out.append(ChartDom(key, body, re.findall(r'<path class="line" d="(M[^"]+)"', body)))
    return out


def outside_refs(dom: str) -> list[str]:
    """``src``/``href`` values that point off the page (anything but ``#...`` and ``data:``)."""
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", dom, re.I)
    return [r for r in refs if not r.startswith(("#", "data:"))]


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG image; AssertionError when ``data`` is not a PNG."""
    assert data[:8] == PNG_MAGIC, "not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


CHART_KEYS = ["users", "throughput", "latency", "rows"]


def drawn_charts(profile_dir: Path, url: str) -> tuple[subprocess.CompletedProcess[str], list[ChartDom]]:
    """Load a report page in Chromium: (the run, with the DOM as stdout and the console on
    stderr; the charts), having checked that Chromium ran, that the report's four charts are
    there in order, and that each drew its lines."""
    proc = run_chromium(profile_dir, url, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    charts = charts_in(proc.stdout)
    assert [c.key for c in charts] == CHART_KEYS
    for chart in charts:
        assert chart.drew, chart.key
    return proc, charts

