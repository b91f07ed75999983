"""Running the goose-redis CLI in subprocesses and watching their output."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CLI_TIMEOUT = 120.0


def cli_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ plus ``env`` (which wins), unbuffered so lines arrive as they are printed."""
    merged = dict(os.environ)
    merged["PYTHONUNBUFFERED"] = "1"
    if env:
        merged.update(env)
    return merged


def cli_command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "goose_redis", *args]


def kill_group(proc: subprocess.Popen[str] | subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGKILL a process started with ``start_new_session=True`` and its group, and reap it.

    The group is signalled even when the leader already exited: children it spawned
    (e.g. workers) may still be in it.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:  # not a group leader after all
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)


def run_cli(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_CLI_TIMEOUT,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m goose_redis *args`` from the repo root to completion.

    ``env`` is added to (not a replacement for) the current environment. stdout and stderr
    are captured as text. On timeout the whole process group is killed and an
    AssertionError carries what the process had printed.
    """
    cmd = cli_command(args)
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        env=cli_env(env),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        stdout, stderr = proc.communicate()
        raise AssertionError(
            f"{' '.join(args)} did not finish within {timeout}s\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        ) from None
    finally:
        kill_group(proc)  # leftovers of the group (e.g. workers it spawned)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def start_cli(args: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``python -m goose_redis *args`` in a new process group with text pipes.

    The caller must drain stdout and stderr (see :class:`LineCollector`) or the child can
    block on a full pipe, and must kill it (``kill_group``); the ``procs`` fixture does both.
    """
    return subprocess.Popen(
        cli_command(args),
        cwd=REPO_ROOT,
        env=cli_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        start_new_session=True,
    )


class LineCollector:
    """Reads a text stream line by line in a daemon thread, so tests can wait for output.

    ``wait_for`` searches every line collected so far (or those from ``since``, a value
    of :meth:`mark`), then waits for new ones until the deadline.
    """

    def __init__(self, stream: IO[str], name: str = "output") -> None:
        self.name = name
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, args=(stream,), name=f"lines-{name}", daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                with self._cond:
                    self._lines.append(line.rstrip("\n"))
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass  # stream closed under us: same as EOF
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True once the stream reached EOF (the process closed it or exited)."""
        with self._cond:
            return self._closed

    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def text(self) -> str:
        with self._cond:
            return "\n".join(self._lines)

    def mark(self) -> int:
        """The number of lines so far; pass as ``since`` to wait only for later lines."""
        with self._cond:
            return len(self._lines)

    def wait_closed(self, timeout: float = 10.0) -> None:
        """Wait for EOF (all output read), e.g. after the process exited."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"{self.name} still open after {timeout}s:\n{self.text()}")

    def wait_for_match(self, pattern: str | re.Pattern[str], timeout: float = 10.0, since: int = 0) -> re.Match[str]:
        """The first match of ``pattern`` (``re.search`` per line) at or after line ``since``.

        Raises AssertionError with everything captured when the deadline passes or the
        stream ends without a match.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        next_line = since
        with self._cond:
            while True:
                for line in self._lines[next_line:]:
                    match = regex.search(line)
                    if match is not None:
                        return match
                next_line = max(next_line, len(self._lines))
                if self._closed:
                    reason = "the stream ended"
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    reason = f"timed out after {timeout}s"
                    break
                self._cond.wait(remaining)
            captured = "\n".join(self._lines)
        raise AssertionError(
            f"{reason} waiting for /{regex.pattern}/ in {self.name}; captured {self.name}:\n{captured}"
        )

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 10.0, since: int = 0) -> str:
        """Like :meth:`wait_for_match` but returns the whole matching line."""
        return self.wait_for_match(pattern, timeout, since).string


def wait_for_line(collector: LineCollector, pattern: str | re.Pattern[str], deadline: float) -> str:
    """Wait for a line matching ``pattern`` until ``deadline`` (a ``time.monotonic()`` value)."""
    return collector.wait_for(pattern, max(0.0, deadline - time.monotonic()))


class CliProcess:
    """A started CLI process with collectors on both pipes."""

    def __init__(self, proc: subprocess.Popen[str], args: Sequence[str]) -> None:
        assert proc.stdout is not None and proc.stderr is not None, "start with stdout/stderr pipes"
        self.proc = proc
        self.args = list(args)
        self.stdout = LineCollector(proc.stdout, "stdout")
        self.stderr = LineCollector(proc.stderr, "stderr")

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def send_signal(self, sig: int) -> None:
        """Signal only the main process (as a terminal Ctrl-C would, use SIGINT)."""
        self.proc.send_signal(sig)

    def signal_group(self, sig: int) -> None:
        """Signal the whole process group (the CLI and anything it spawned)."""
        os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for exit and for both pipes to be drained; AssertionError with output on timeout."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.args} still running after {timeout}s\n{self.output()}") from None
        self.stdout.wait_closed()
        self.stderr.wait_closed()
        return code

    def output(self) -> str:
        return f"--- stdout ---\n{self.stdout.text()}\n--- stderr ---\n{self.stderr.text()}"

    def kill(self) -> None:
        kill_group(self.proc)


class ProcessTracker:
    """What the ``procs`` fixture yields: starts processes and kills them all in teardown."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[str] | subprocess.Popen[bytes]] = []

    def start(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> CliProcess:
        """``start_cli`` + collectors on stdout/stderr; killed at teardown."""
        proc = start_cli(args, env)
        self._procs.append(proc)
        return CliProcess(proc, args)

    def track(
        self, proc: subprocess.Popen[str] | subprocess.Popen[bytes]
    ) -> subprocess.Popen[str] | subprocess.Popen[bytes]:
        """Kill this (any Popen, ideally with ``start_new_session=True``) at teardown too."""
        self._procs.append(proc)
        return proc

    def __iter__(self) -> Iterator[subprocess.Popen[str] | subprocess.Popen[bytes]]:
        return iter(list(self._procs))

    def kill_all(self) -> None:
        for proc in self._procs:
            kill_group(proc)
        self._procs.clear()
