"""The live progress line: its text, in-place rewriting on a TTY (cut to the terminal's width),
throttling elsewhere; and the Ctrl-C line, timestamped like every log line."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

from support import REPO_ROOT, CountingTarget, cli_env, kill_group
from support.procs import cli_command

from goose_redis.progress import ProgressLine, fit, format_progress


def test_format_progress() -> None:
    assert format_progress(8, 8, 12.9, 30.0, 412.34, 4950, 3, 12.44, 2) == (
        "users 8/8 | 00:12/00:30 | 412.3 req/s | 4,950 reqs | 3 fails (0.06%) | p95 12.4 ms | workers 2"
    )
    assert format_progress(2, 8, 3725, None, 0.0, 0, 0, None) == (
        "users 2/8 | 1:02:05 | 0.0 req/s | 0 reqs | 0 fails (0%) | p95 -"
    )


class Clock:
    """A settable time source for the throttle."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_tty_rewrites_one_line_in_place() -> None:
    out = io.StringIO()
    line = ProgressLine(out, tty=True)
    line.update(format_progress(1, 4, 1.0, 10.0, 5.0, 5, 0, 3.0))
    line.update(format_progress(2, 4, 2.0, 10.0, 6.0, 11, 1, 3.5))
    line.close()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.count("\x1b[K") == 2 and text.endswith("\n")
    assert text.count("\n") == 1
    assert "users 2/4 | 00:02/00:10" in text.split("\r")[-1]


def test_plain_lines_are_throttled() -> None:
    out = io.StringIO()
    clock = Clock()
    line = ProgressLine(out, tty=False, interval_s=10.0, clock=clock)
    for step in range(25):  # called every second for 25 s
        line.update(format_progress(1, 1, float(step), None, 1.0, step, 0, None))
        clock.now += 1.0
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # at 0 s, 10 s and 20 s
    assert [ln.split(" | ")[1] for ln in lines] == ["00:00", "00:10", "00:20"]
    line.close()  # the final state, held back by the throttle, is printed at the end
    lines = out.getvalue().splitlines()
    assert [ln.split(" | ")[1] for ln in lines] == ["00:00", "00:10", "00:20", "00:24"]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    line.close()  # only once
    assert len(out.getvalue().splitlines()) == 4


def test_plain_close_adds_nothing_when_the_last_state_was_printed() -> None:
    out = io.StringIO()
    line = ProgressLine(out, tty=False, interval_s=10.0, clock=Clock())
    line.update(format_progress(1, 1, 0.0, None, 1.0, 0, 0, None))
    line.close()
    assert len(out.getvalue().splitlines()) == 1


def test_tty_autodetect_and_clear() -> None:
    out = io.StringIO()  # StringIO.isatty() is False
    assert ProgressLine(out).tty is False
    tty = ProgressLine(out, tty=True)
    tty.update(format_progress(1, 1, 0.0, None, 0.0, 0, 0, None))
    tty.clear()
    tty.close()  # nothing left to end
    assert out.getvalue().endswith("\r\x1b[K")


def test_tty_line_is_cut_to_the_terminal_width() -> None:
    out = io.StringIO()
    width = {"cols": 40}
    line = ProgressLine(out, tty=True, columns=lambda: width["cols"])
    text = format_progress(8, 8, 12.9, 30.0, 412.34, 4950, 3, 12.44, 2)
    assert len(text) > 80
    line.update(text)
    width["cols"] = 200  # the window grew: the whole line fits again
    line.update(text)
    first, second = out.getvalue().split("\r")[1:]
    assert first == text[:36] + "...\x1b[K"  # 39 columns: never the last one, which would wrap on some terminals
    assert second == text + "\x1b[K"
    assert "\n" not in out.getvalue()
    assert fit("short", 40) == "short" and len(fit("x" * 100, 3)) == 10  # a floor of 10
    assert fit(text, 0) == text  # a terminal that reports no width: nothing to cut to


def test_plain_lines_are_never_cut() -> None:
    out = io.StringIO()
    line = ProgressLine(out, tty=False, columns=lambda: 20)
    text = format_progress(8, 8, 12.9, 30.0, 412.34, 4950, 3, 12.44, 2)
    line.update(text)
    assert out.getvalue() == text + "\n"  # a CI log has no width


def _run_on_pty(args: list[str], cols: int, tmp_path: Path, interrupt_after: str | None = None) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal ``cols`` wide; (exit code, what stderr got)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
    env = {k: v for k, v in cli_env().items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(cli_command(args), cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave, start_new_session=True)  # fmt: skip
    os.close(slave)
    raw = bytearray()
    done = threading.Event()

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            raw.extend(data)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if interrupt_after is not None:
            deadline = time.monotonic() + 30
            while interrupt_after not in raw.decode("utf-8", "replace"):
                assert time.monotonic() < deadline, raw.decode("utf-8", "replace")
                done.wait(0.05)
            proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        done.wait(10)
    finally:
        kill_group(proc)
        os.close(master)
    return code, raw.decode("utf-8", "replace")


def test_narrow_terminal_keeps_one_line(target: CountingTarget, tmp_path: Path) -> None:
    """A 50-column terminal: every rewrite fits, so the line is rewritten, never wrapped."""
    lt = tmp_path / "lt.py"
    lt.write_text(LOAD_TEST)
    code, text = _run_on_pty(["-f", str(lt), "--host", target.url, "-u", "2", "-r", "20", "-t", "2s"], 50, tmp_path)
    assert code == 0, text
    rewrites = re.findall(r"\r([^\r\n\x1b]*)\x1b\[K", text)
    progress = [r for r in rewrites if r.startswith("users ")]
    assert len(progress) >= 3, repr(text)
    assert all(len(r) <= 49 for r in progress), progress
    assert any(r.endswith("...") for r in progress)


def test_sigint_line_has_a_timestamp(target: CountingTarget, tmp_path: Path) -> None:
    lt = tmp_path / "lt.py"
    lt.write_text(LOAD_TEST)
    args = ["-f", str(lt), "--host", target.url, "-u", "1", "-r", "20", "-t", "60s"]
    code, text = _run_on_pty(args, 200, tmp_path, interrupt_after="users 1/1")
    assert code == 0, text
    shown = re.split(r"[\r\n]+", text.replace("\x1b[K", ""))  # the progress line is erased first
    lines = [line for line in shown if "SIGINT received" in line]
    assert len(lines) == 1, text
    assert re.fullmatch(r"\d\d:\d\d:\d\d NOTICE SIGINT received: stopping gracefully \(press Ctrl-C again to exit "
                        r"now\)", lines[0]), lines  # fmt: skip


LOAD_TEST = """
from goose_redis import Scenario, Transaction, User


async def front(user: User) -> None:
    await user.get("/any/front")


browse = Scenario("Browse", wait=(0.01, 0.02)).register(Transaction(front))
"""
