"""The live progress line: its text, in-place rewriting on a TTY, throttling elsewhere."""

from __future__ import annotations

import io

from goose_redis.progress import ProgressLine, format_progress


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
