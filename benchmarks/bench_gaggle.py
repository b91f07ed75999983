"""What a gaggle costs Redis, and what the Manager costs, during a steady run.

    python benchmarks/bench_gaggle.py                        # four phases, about a minute and a half
    python benchmarks/bench_gaggle.py --phase-s 40 --rows 10 --skip-8   # 10 request rows, longer windows

Phases (each a real gaggle of CLI processes against a private redis-server and a tiny
keep-alive HTTP target, all on 127.0.0.1):

1. 2 Workers, 8 users with waits (0.5 to 1 s after each transaction): a low request rate;
2. 2 Workers, 8 users with waits of 5 to 10 ms: about a thousand requests a second;
3. 2 Workers, 8 users without waits: as many requests as the machine allows;
4. 8 Workers, 16 users with short waits: the Manager's CPU with 8 Workers.

The load test has two request rows, or ``--rows N`` (N transactions of one request each).
A Worker sends its rows' sketches with every fifth metrics entry (every 10 s), so per
Worker bytes are only steady over windows of tens of seconds: give ``--phase-s 40``.

In the steady part of each phase (after every user is launched and the first metrics
interval has passed) it measures, on the private Redis:

* ``INFO commandstats`` and ``INFO stats`` deltas: commands per second by command, and
  network bytes in and out per second (every client together);
* a ``MONITOR`` sample: each command attributed to the process that sent it (each process
  connects with its own ``client_name``), so commands and request bytes per second are
  given per Worker and for the Manager, and the mean size of one metrics entry (``XADD``);
* the Manager's CPU time (``/proc/PID/stat``) over the same window, as a share of one core.

The request rate comes from the Manager's JSON report. A benchmark, not a test: nothing
here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

REPO_ROOT = Path(__file__).resolve().parent.parent
GAGGLE = "bench"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"

LOAD_TEST = textwrap.dedent(
    """
    from goose_redis import Scenario, Transaction, User


    async def index(user: User) -> None:
        await user.get("/", name="index")


    async def any_x(user: User) -> None:
        await user.get("/any/x", name="any x")


    bench = Scenario("Bench", wait={wait!r}).register(
        Transaction(index, name="index"), Transaction(any_x, name="any x")
    )
    """
)


# --rows N: N transactions of one request each, so N request rows (and N transaction rows).
ROWS_LOAD_TEST = """
from goose_redis import Scenario, Transaction, User


def make(i: int):
    async def get(user: User) -> None:
        await user.get(f"/any/{{i}}", name=f"row {{i}}")

    return Transaction(get, name=f"row {{i}}")


bench = Scenario("Bench", wait={wait!r}).register(*(make(i) for i in range({rows})))
"""


# -- the pieces --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_target(port: int) -> None:
    """A keep-alive HTTP/1.1 responder: one fixed 200 per request head (no framework)."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                writer.write(RESPONSE)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(client, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RedisProc:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
            start_new_session=True,
        )  # fmt: skip
        self.client = redis.Redis(port=self.port, socket_timeout=10)
        wait_for(self._answers, 10, "redis-server")

    def _answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            return False

    def url(self, name: str) -> str:
        return f"redis://127.0.0.1:{self.port}/0?client_name={name}"

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(10)


def commandstats(r: redis.Redis) -> Counter[str]:
    stats = r.info("commandstats")
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})


def net_bytes(r: redis.Redis) -> tuple[int, int]:
    s = r.info("stats")
    return int(s["total_net_input_bytes"]), int(s["total_net_output_bytes"])


def monitor_sample(r: redis.Redis, seconds: float) -> list[dict[str, Any]]:
    """Commands seen by MONITOR for ``seconds`` (in a thread: the reader blocks)."""
    seen: list[dict[str, Any]] = []
    stop = threading.Event()

    def read() -> None:
        with r.monitor() as m:
            while not stop.is_set():
                try:
                    seen.append(m.next_command())
                except (redis.ConnectionError, redis.TimeoutError):
                    return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    time.sleep(seconds)
    stop.set()
    t.join(5)  # heartbeats arrive every second, so the reader wakes up to see ``stop``
    return seen


_ESCAPE = re.compile(r"\\x[0-9a-fA-F]{2}|\\.")


def monitor_bytes(command: str) -> int:
    """Bytes a command's arguments really had: MONITOR escapes binary bytes (a compressed
    metrics entry) as ``\\xNN``, four characters for one byte."""
    return len(_ESCAPE.sub("_", command))


def client_names(r: redis.Redis) -> dict[str, str]:
    """``ip:port`` -> the client_name of every connection."""
    return {c["addr"]: c.get("name") or "?" for c in r.client_list()}


# -- one phase -----------------------------------------------------------------------


@dataclass
class Phase:
    label: str
    workers: int
    users: int
    wait: tuple[float, float] | None
    results: dict[str, Any] = field(default_factory=dict)


def run_phase(phase: Phase, rds: RedisProc, target: str, workdir: Path, phase_s: float, rows: int | None) -> None:
    rds.client.flushall()
    lt = workdir / f"lt_{phase.workers}_{phase.users}.py"
    text = LOAD_TEST.format(wait=phase.wait) if rows is None else ROWS_LOAD_TEST.format(wait=phase.wait, rows=rows)
    lt.write_text(text)
    report = workdir / f"report_{phase.workers}_{phase.users}.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    py = [sys.executable, "-m", "goose_redis", "-f", str(lt), "--gaggle", GAGGLE]
    logs = []

    def start(name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed below
        logs.append(log)
        return subprocess.Popen(py + ["--redis-url", rds.url(name), *args], stdout=log, stderr=log, env=env)

    manager = start(
        "manager",
        ["--manager", "--expect-workers", str(phase.workers), "-u", str(phase.users), "-r", "100", "-t",
         f"{phase_s:.0f}s", "--no-reset-metrics", "--host", target, "--report-file", str(report), "-q"],
    )  # fmt: skip
    workers = [start(f"worker{i + 1}", ["--worker", "-q"]) for i in range(phase.workers)]
    try:
        wait_for(lambda: rds.client.hget(f"goose:{GAGGLE}:run", "state") == b"running", 60, "the start")
        time.sleep(3.5)  # every user launched, and the first metrics interval has passed
        sample_s = min(20.0, max(4.0, phase_s / 3))
        window = max(4.0, phase_s - 6.0 - sample_s)
        # Window 1: INFO deltas and the Manager's CPU, with nothing else attached to Redis.
        c0, (in0, out0), cpu0 = commandstats(rds.client), net_bytes(rds.client), cpu_seconds(manager.pid)
        t0 = time.monotonic()
        time.sleep(window)
        c1, (in1, out1), cpu1 = commandstats(rds.client), net_bytes(rds.client), cpu_seconds(manager.pid)
        t1 = time.monotonic()
        # Window 2: who sends what (MONITOR costs Redis some CPU, so it is kept apart).
        names = client_names(rds.client)
        seen = monitor_sample(rds.client, sample_s)
        names.update(client_names(rds.client))
    finally:
        _, status, usage = os.wait4(manager.pid, 0)
        manager.returncode = code = os.waitstatus_to_exitcode(status)
        for w in workers:
            w.wait(60)
        for log in logs:
            log.close()
    if code != 0:
        raise SystemExit(f"manager exited {code}; see {workdir / 'manager.log'}")

    dt = t1 - t0
    calls = c1 - c0
    calls.pop("info", None)
    calls.pop("client|list", None)
    per_proc: dict[str, Counter[str]] = {}
    req_bytes: Counter[str] = Counter()
    xadd_sizes: list[int] = []
    for cmd in seen:
        who = names.get(f"{cmd['client_address']}:{cmd['client_port']}", "?")
        who = "worker" if who.startswith("worker") else who
        verb = cmd["command"].split(" ", 1)[0].lower()
        per_proc.setdefault(who, Counter())[verb] += 1
        size = monitor_bytes(cmd["command"])
        req_bytes[who] += size
        if verb == "xadd":
            xadd_sizes.append(size)
    doc = json.loads(report.read_text())
    r = phase.results
    r["req_per_s"] = doc["aggregated"]["count"] / max(doc["duration_s"], 1e-9)
    r["cmds_per_s"] = sum(calls.values()) / dt
    r["by_command"] = {k: v / dt for k, v in calls.most_common()}
    r["net_in_per_s"] = (in1 - in0) / dt
    r["net_out_per_s"] = (out1 - out0) / dt
    r["manager_cpu_pct"] = 100.0 * (cpu1 - cpu0) / dt
    r["manager_cpu_total_s"] = usage.ru_utime + usage.ru_stime
    w_cmds = sum(per_proc.get("worker", Counter()).values())
    r["worker_cmds_per_s"] = w_cmds / sample_s / phase.workers
    r["worker_req_bytes_per_s"] = req_bytes["worker"] / sample_s / phase.workers
    r["manager_cmds_per_s"] = sum(per_proc.get("manager", Counter()).values()) / sample_s
    r["manager_req_bytes_per_s"] = req_bytes["manager"] / sample_s
    r["worker_by_command"] = {k: v / sample_s / phase.workers for k, v in per_proc.get("worker", Counter()).items()}
    r["xadd_bytes"] = sum(xadd_sizes) / len(xadd_sizes) if xadd_sizes else 0.0


def report(phases: list[Phase]) -> None:
    print()
    columns = [
        "phase", "req/s", "Redis cmds/s (all)", "net in B/s", "net out B/s", "cmds/s per Worker",
        "request B/s per Worker", "Manager cmds/s", "XADD B/entry", "Manager CPU", "Manager CPU, whole run",
    ]  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for p in phases:
        r = p.results
        print(
            f"| {p.label} | {r['req_per_s']:,.0f} | {r['cmds_per_s']:,.1f} | {r['net_in_per_s']:,.0f} |"
            f" {r['net_out_per_s']:,.0f} | {r['worker_cmds_per_s']:,.1f} | {r['worker_req_bytes_per_s']:,.0f} |"
            f" {r['manager_cmds_per_s']:,.1f} | {r['xadd_bytes']:,.0f} | {r['manager_cpu_pct']:.1f} % |"
            f" {r['manager_cpu_total_s']:.2f} s |"
        )
    for p in phases:
        per_worker = ", ".join(f"{k} {v:.2f}" for k, v in sorted(p.results["worker_by_command"].items()))
        print(f"\n{p.label}: per Worker per second: {per_worker}")
        every = ", ".join(f"{k} {v:.1f}" for k, v in p.results["by_command"].items())
        print(f"{p.label}: all clients per second: {every}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase-s", type=float, default=18.0, help="run time of each phase (after the ramp-up)")
    ap.add_argument("--skip-8", action="store_true", help="skip the 8-Worker phase")
    ap.add_argument("--rows", type=int, help="N request rows (N transactions of one request) instead of 2")
    ap.add_argument("--serve-target", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_target is not None:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        serve_target(args.serve_target)
        return

    phases = [
        Phase("2 Workers, 8 users, waits 0.5-1 s", 2, 8, (0.5, 1.0)),
        Phase("2 Workers, 8 users, waits 5-10 ms", 2, 8, (0.005, 0.01)),
        Phase("2 Workers, 8 users, no waits", 2, 8, None),
    ]
    if not args.skip_8:
        phases.append(Phase("8 Workers, 16 users, waits 0.05-0.1 s", 8, 16, (0.05, 0.1)))
    with tempfile.TemporaryDirectory(prefix="bench-gaggle-") as tmp:
        workdir = Path(tmp)
        tport = free_port()
        target = subprocess.Popen([sys.executable, __file__, "--serve-target", str(tport)], start_new_session=True)
        rds = RedisProc(workdir)
        try:
            wait_for(lambda: _listening(tport), 10, "the target")
            for p in phases:
                print(f"running: {p.label} ({args.phase_s:.0f} s) ...", file=sys.stderr, flush=True)
                run_phase(p, rds, f"http://127.0.0.1:{tport}", workdir, args.phase_s, args.rows)
        finally:
            rds.stop()
            target.terminate()
            target.wait(10)
    report(phases)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
