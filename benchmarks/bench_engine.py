"""Requests per second of one goose-redis process, pinned to one core.

    python benchmarks/bench_engine.py                          # 50 users, 15 s, the default loop (uvloop)
    python benchmarks/bench_engine.py --event-loop asyncio     # same, on asyncio's own loop
    python benchmarks/bench_engine.py --profile prof.out       # cProfile of the engine

What runs:

* a fast HTTP target (a bare asyncio protocol that answers every request with the same
  tiny keep-alive 200 response, no HTTP framework) in ``--target-workers`` processes
  sharing one port (SO_REUSEPORT), pinned to the *target core*;
* ``goose-redis`` standalone, pinned to the *engine core*: 50 users, no wait, one
  scenario with a single ``GET /`` transaction, all metrics on (rows, sketches, series),
  no request log, for ``--run-time`` seconds after every user is launched.

It prints the requests per second of the measured period, read from the JSON report
(``aggregated.rps``). A benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"

LOAD_TEST = textwrap.dedent(
    """
    from goose_redis import Scenario, Transaction, User


    async def get_root(user: User) -> None:
        await user.get("/")


    bench = Scenario("Bench").register(Transaction(get_root, name="get root"))
    """
)

PROFILE_SHIM = (
    "import cProfile, sys; from goose_redis.cli import entrypoint; out = sys.argv.pop(1); "
    "sys.argv[0] = 'goose-redis'; p = cProfile.Profile(); p.enable()\n"
    "try:\n    entrypoint()\nexcept SystemExit:\n    pass\nfinally:\n    p.disable(); p.dump_stats(out)"
)


class _Answer(asyncio.Protocol):
    """Answers each complete request head with RESPONSE; pipelining-safe; bodies not expected."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data
        n = buf.count(b"\r\n\r\n")
        if n:
            assert self.transport is not None
            self.transport.write(RESPONSE * n)
            buf = buf[buf.rfind(b"\r\n\r\n") + 4 :]
        self.buffer = buf


def serve_target(port: int, core: int | None) -> None:
    """One target process: bind with SO_REUSEPORT and answer until killed."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Answer, sock=sock, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                if s.recv(1024).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"target did not answer on port {port} within {timeout}s")


def _pinned(core: int | None) -> Callable[[], None] | None:
    """A preexec_fn that pins the child to ``core`` (as ``taskset -c core``)."""
    if core is None:
        return None
    return lambda: os.sched_setaffinity(0, {core})


def _loopback_only(host: str) -> str:
    name = urlsplit(host).hostname or ""
    if not (name == "localhost" or name == "::1" or name.startswith("127.")):
        raise SystemExit(f"--host must be on this machine (127.0.0.0/8, ::1 or localhost), not {host!r}")
    return host


def start_targets(port: int, workers: int, core: int | None) -> list[subprocess.Popen[bytes]]:
    cmd = [sys.executable, __file__, "--serve-target", str(port)]
    if core is not None:
        cmd += ["--target-core", str(core)]
    procs = [subprocess.Popen(cmd, start_new_session=True) for _ in range(workers)]
    _wait_listening(port)
    return procs


def run_engine(args: argparse.Namespace, host: str, workdir: Path) -> dict[str, object]:
    lt = workdir / "bench_loadtest.py"
    lt.write_text(LOAD_TEST)
    report = workdir / "report.json"
    opts = [
        "-f", str(lt), "--host", host, "-u", str(args.users), "-r", str(args.hatch_rate),
        "-t", f"{args.run_time}s", "--report-file", str(report), "-q",
    ]  # fmt: skip
    if args.profile:
        py = [sys.executable, "-c", PROFILE_SHIM, args.profile]
    else:
        py = [sys.executable, "-m", "goose_redis"]
    cmd = py + opts
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    if args.event_loop:
        env["GOOSE_EVENT_LOOP"] = args.event_loop
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=_pinned(args.engine_core)
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"goose-redis exited {proc.returncode}:\n{err.read().decode(errors='replace')}")
    data: dict[str, object] = json.loads(report.read_text())
    data["_cpu_s"] = usage.ru_utime + usage.ru_stime
    return data


def main() -> None:
    cores = sorted(os.sched_getaffinity(0))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--run-time", type=float, default=15.0, help="seconds after all users are launched")
    p.add_argument("--hatch-rate", type=float, default=500.0, help="users per second (ramp-up is excluded)")
    p.add_argument("--engine-core", type=int, default=cores[0])
    p.add_argument("--target-core", type=int, default=cores[-1] if len(cores) > 1 else None)
    p.add_argument("--target-workers", type=int, default=2, help="target processes sharing the target core")
    p.add_argument("--host", help="load this target instead of starting one (must be on this machine)")
    p.add_argument("--event-loop", choices=["auto", "uvloop", "asyncio"],
                   help="GOOSE_EVENT_LOOP for the engine (default: its own default, uvloop where installed)")
    p.add_argument("--profile", metavar="FILE", help="write a cProfile of the engine to FILE (slows it down)")
    p.add_argument("--serve-target", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.serve_target is not None:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        serve_target(args.serve_target, args.target_core)
        return
    if args.engine_core == args.target_core:
        print("warning: engine and target share a core; the figure is not per core", file=sys.stderr)

    targets: list[subprocess.Popen[bytes]] = []
    try:
        host = _loopback_only(args.host) if args.host else None
        if host is None:
            port = _free_port()
            targets = start_targets(port, args.target_workers, args.target_core)
            host = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory(prefix="goose-bench-") as tmp:
            report = run_engine(args, host, Path(tmp))
    finally:
        for t in targets:
            t.terminate()
        for t in targets:
            try:
                t.wait(5)
            except subprocess.TimeoutExpired:
                t.kill()
    agg = report["aggregated"]
    assert isinstance(agg, dict)
    loop = args.event_loop or "default loop"
    print(
        f"goose-redis {report['version']} ({loop}), {args.users} users, engine on core {args.engine_core}, "
        f"target on core {args.target_core} x{args.target_workers}"
    )
    print(f"measured {report['duration_s']:.1f} s: {agg['count']:,} requests, {agg['fail_count']:,} failures")
    print(
        f"median {agg['median_ms']:.3f} ms, p99 {agg['percentiles_ms']['99']:.3f} ms" if agg["count"] else "no requests"
    )
    cpu_s = float(report["_cpu_s"])  # type: ignore[arg-type]
    print(f"engine CPU: {cpu_s:.1f} s in all (start-up and ramp-up included)")
    print(f"requests per engine CPU second: {agg['count'] / cpu_s:,.0f} (a lower bound)")
    print(f"requests/second: {agg['rps']:,.0f}")


if __name__ == "__main__":
    main()
