"""Many short CLI runs for the price of one start-up.

Importing goose_redis (aiohttp, redis-py) is most of what a rejected command
line costs. ``run_cli_batch`` starts ONE process that imports the CLI once,
then forks a child per command line; each child is a real process with its
own stdout, stderr, exit code and session, running the same
``goose_redis.cli.entrypoint`` that ``python -m goose_redis`` runs. A child
still running at the deadline is killed with its process group and reported
with ``returncode == -9`` and ``timed_out``.

Run as a script (``python tests/support/batch.py``) it reads the job as JSON on
stdin and writes the results as JSON on stdout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
REPO_ROOT = HERE.parents[2]


@dataclass(frozen=True)
class BatchResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False


def run_cli_batch(
    arg_lists: Sequence[Sequence[str]],
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    parallel: int = 2,
) -> list[BatchResult]:
    """Run ``goose-redis *args`` for each entry (``parallel`` at a time); results in order."""
    job = {"cases": [list(a) for a in arg_lists], "timeout": timeout, "parallel": parallel}
    merged = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, str(HERE)],
        cwd=REPO_ROOT,
        env=merged,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    overall = timeout * (len(arg_lists) / max(parallel, 1) + 2)
    try:
        out, err = proc.communicate(json.dumps(job), timeout=overall)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"the batch runner did not finish within {overall:.0f}s:\n{err}") from None
    if proc.returncode != 0:
        raise AssertionError(f"the batch runner failed ({proc.returncode}):\n{err}")
    return [BatchResult(**r) for r in json.loads(out)]


def _child(args: list[str], out: str, err: str) -> None:
    """In the forked child: run the CLI with its own stdio and session; never returns."""
    code = 1
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
        os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        from goose_redis.cli import entrypoint

        try:
            entrypoint(args)
            code = 0
        except SystemExit as exc:  # as the interpreter treats it at exit
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                sys.stderr.write(f"{exc.code}\n")
        except BaseException:
            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _main() -> None:
    job: dict[str, Any] = json.load(sys.stdin)
    cases: list[list[str]] = job["cases"]
    timeout, parallel = float(job["timeout"]), int(job["parallel"])
    import goose_redis.cli  # noqa: F401 - once, before forking: the point of the batch

    results: list[dict[str, Any] | None] = [None] * len(cases)
    work = tempfile.mkdtemp(prefix="goose-batch-")
    queue = list(range(len(cases)))
    running: dict[int, tuple[int, float]] = {}  # pid -> (case, deadline)
    killed: set[int] = set()
    while queue or running:
        while queue and len(running) < parallel:
            n = queue.pop(0)
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(cases[n], f"{work}/{n}.out", f"{work}/{n}.err")
            running[pid] = (n, time.monotonic() + timeout)
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for child, (_, deadline) in running.items():
                if time.monotonic() > deadline and child not in killed:
                    killed.add(child)
                    os.killpg(child, signal.SIGKILL)
            time.sleep(0.005)
            continue
        n, _ = running.pop(pid)
        try:
            os.killpg(pid, signal.SIGKILL)  # anything the case left behind in its group
        except ProcessLookupError:
            pass
        results[n] = {
            "args": cases[n],
            "returncode": os.waitstatus_to_exitcode(status),
            "stdout": Path(f"{work}/{n}.out").read_text(errors="replace"),
            "stderr": Path(f"{work}/{n}.err").read_text(errors="replace"),
            "timed_out": pid in killed,
        }
    for name in os.listdir(work):
        os.unlink(os.path.join(work, name))
    os.rmdir(work)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    sys.path.remove(str(HERE.parent))  # the test helpers next to this file are not the CLI's modules
    _main()
