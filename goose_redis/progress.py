"""The live progress line on stderr while a load test runs.

On a terminal one line is rewritten in place; anywhere else (CI logs, files)
a plain line is printed at most every ``interval_s`` seconds so logs stay short.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

from goose_redis.report.fmt import fail_pct, fmt_clock, fmt_int, fmt_ms, fmt_pct

CLEAR_TO_END = "\x1b[K"


def format_progress(
    users: int,
    target_users: int,
    elapsed_s: float,
    run_time_s: float | None,
    rps: float,
    requests: int,
    failures: int,
    p95_ms: float | None,
    workers: int | None = None,
) -> str:
    """``users 8/8 | 00:12/00:30 | 412.3 req/s | 4,950 reqs | 3 fails (0.06%) | p95 12.4 ms | workers 2``."""
    clock = fmt_clock(elapsed_s)
    if run_time_s is not None:
        clock += f"/{fmt_clock(run_time_s)}"
    parts = [
        f"users {users}/{target_users}",
        clock,
        f"{rps:,.1f} req/s",
        f"{fmt_int(requests)} reqs",
        f"{fmt_int(failures)} fails ({fmt_pct(fail_pct(failures, requests))})",
        f"p95 {fmt_ms(p95_ms)} ms" if p95_ms is not None else "p95 -",
    ]
    if workers is not None:
        parts.append(f"workers {workers}")
    return " | ".join(parts)


def terminal_columns(stream: TextIO) -> int:
    """Width of the terminal ``stream`` writes to: ``$COLUMNS`` if set, else asked of the
    stream itself (stdout may be a pipe while stderr is the terminal); 0 when unknown."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 0


def fit(line: str, columns: int) -> str:
    """``line`` cut to fit ``columns - 1`` characters: a line that wrapped would leave its first
    part behind at each rewrite (``\r`` returns to the start of the last row only).
    ``columns`` 0 means the width is unknown (a terminal that reports none): nothing is cut."""
    if columns <= 0:
        return line
    width = max(columns - 1, 10)
    if len(line) <= width:
        return line
    return line[: width - 3] + "..."


class ProgressLine:
    def __init__(
        self,
        stream: TextIO | None = None,
        tty: bool | None = None,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        columns: Callable[[], int] | None = None,
    ) -> None:
        self.stream: TextIO = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty()) if callable(isatty) else False
        self.tty = tty
        self.interval_s = interval_s
        self._clock = clock
        # The terminal's width, asked at each update (a window can be resized during a run).
        self._columns = columns or (lambda: terminal_columns(self.stream))
        self._last_plain: float | None = None
        self._held: str | None = None  # the newest plain line the throttle held back
        self._on_line = False  # a TTY line is showing and the cursor sits at its end

    def update(self, line: str) -> None:
        """Show ``line`` (from ``format_progress``): in place on a terminal, throttled elsewhere."""
        if not self.tty:
            now = self._clock()
            if self._last_plain is not None and now - self._last_plain < self.interval_s:
                self._held = line
                return
            self._last_plain = now
            self._held = None
        try:
            if self.tty:
                self.stream.write(f"\r{fit(line, self._columns())}{CLEAR_TO_END}")
                self._on_line = True
            else:
                self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not stop the run
            pass

    def clear(self) -> None:
        """Erase the in-place line, so other output (tables) starts on a clean line."""
        if self.tty and self._on_line:
            try:
                self.stream.write(f"\r{CLEAR_TO_END}")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self._on_line = False

    def close(self) -> None:
        """Leave the last TTY line on screen and move to the next line; off a terminal,
        print the last state if the throttle held it back (a short run's final figures)."""
        if not self.tty and self._held is not None:
            line, self._held = self._held, None
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass
        if self.tty and self._on_line:
            try:
                self.stream.write("\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self._on_line = False
