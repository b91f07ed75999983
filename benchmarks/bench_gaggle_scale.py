"""A gaggle of many Workers on one machine: the barrier, the Manager's CPU, exact totals.

    /work/venv/bin/python benchmarks/bench_gaggle_scale.py                  # 200 Workers, 30 s
    /work/venv/bin/python benchmarks/bench_gaggle_scale.py --workers 50 --run-time 20
    /work/venv/bin/python benchmarks/bench_gaggle_scale.py --profile /tmp/manager.txt   # py-spy, steady phase

What runs (all real processes on 127.0.0.1):

* a private ``redis-server``;
* a counting HTTP target: a small aiohttp app in its own process that counts every
  request it answers (``GET /__count`` tells the count and is not counted);
* the Manager, the real CLI: ``python -m goose_redis -f LOADTEST --manager
  --expect-workers N -u N -r N -t RUN_TIME --no-reset-metrics --host ...``;
* N Workers, the real CLI with ``--worker``, all started at once and niced by 10
  (``--workers-nice``: in a deployment the Manager has a core of its own, here it shares
  two with them); one user each, and the load test's one scenario waits 1 s after each
  request, so the gaggle sends about N requests a second.

What it measures:

* **The barrier**: a subscriber on the gaggle's control channel timestamps every
  wake-up. A Worker publishes ``register`` right after it joins the barrier (the
  ``ready`` set), the Manager publishes ``start`` once it has seen all N ready and
  written the start time. The barrier is the time from the last ``register`` to
  ``start`` (what the Manager adds once the last Worker is there); the start itself is
  1 s later (``START_LEAD_S``). The time from launching the processes to the last
  ``register`` is Python start-up on a shared machine, printed for context.
* **CPU** over the steady phase (after every user is launched and the first metrics
  interval): the Manager's user+sys time from ``/proc/PID/stat`` as a share of one
  core and per Worker; Redis's the same way; the Workers' together.
* **Redis**: commands per second (``INFO commandstats`` deltas, by command) and
  network bytes per second over the same window.
* **Totals**: the report's aggregated count (nothing reset) against the target's count,
  and the report's verdict (integrity: no Worker lost, every final delta merged).

A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redis
from bench_gaggle import RedisProc, commandstats, cpu_seconds, free_port, net_bytes, wait_for

REPO_ROOT = Path(__file__).resolve().parent.parent
GAGGLE = "scale"
COUNT_PATH = "/__count"

LOAD_TEST = textwrap.dedent(
    """
    from goose_redis import Scenario, Transaction, User


    async def index(user: User) -> None:
        await user.get("/", name="index")


    slow = Scenario("Slow", wait=(1.0, 1.0)).register(Transaction(index, name="index"))
    """
)


# -- the counting target (its own process) -----------------------------------------------


def serve_target(port: int) -> None:
    from aiohttp import web

    count = 0

    async def hit(request: web.Request) -> web.Response:
        nonlocal count
        count += 1
        return web.Response(text="ok")

    async def tell(request: web.Request) -> web.Response:
        return web.json_response({"count": count})

    app = web.Application()
    app.router.add_get(COUNT_PATH, tell)
    app.router.add_route("*", "/{tail:.*}", hit)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=2048)


def target_count(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{COUNT_PATH}", timeout=10) as resp:
        return int(json.loads(resp.read())["count"])


# -- watching the control channel ----------------------------------------------------------


class ControlWatch:
    """Timestamps every wake-up on the control channel (a thread: the reader blocks)."""

    def __init__(self, client: redis.Redis, channel: str) -> None:
        self.events: list[tuple[float, bytes]] = []
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stop.is_set():
            msg = self.pubsub.get_message(timeout=0.5)
            if msg is not None and isinstance(msg.get("data"), bytes):
                self.events.append((time.monotonic(), msg["data"]))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.pubsub.close()

    def barrier(self) -> tuple[float | None, float | None, int]:
        """(time of the last ``register`` before ``start``, time of ``start``, registers seen)."""
        start = next((t for t, word in self.events if word == b"start"), None)
        registers = [t for t, word in self.events if word == b"register" and (start is None or t <= start)]
        return (registers[-1] if registers else None), start, len(registers)


# -- CPU of many processes ----------------------------------------------------------------


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except (OSError, IndexError):
            pass  # already gone
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def redis_pid(client: redis.Redis) -> int:
    return int(client.info("server")["process_id"])


# -- py-spy ---------------------------------------------------------------------------------


def start_profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        print("py-spy is not installed (pip install py-spy): no profile", file=sys.stderr)
        return None
    argv = [pyspy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "1000",
            "--nonblocking", "--gil", "--format", "raw", "--output", str(out)]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def summarise_profile(raw: Path, top: int = 25) -> str:
    """Self and inclusive sample shares by function, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]  # by function, not line
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            incl[frame] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples; self time:"]
    lines += [f"  {100 * n / total:5.1f} %  {frame}" for frame, n in own.most_common(top)]
    lines.append("inclusive, goose-redis's own functions:")
    ours = [(f, n) for f, n in incl.most_common() if "goose_redis/" in f and "cli.py" not in f and "__main__" not in f]
    lines += [f"  {100 * n / total:5.1f} %  {frame}" for frame, n in ours[:top]]
    return "\n".join(lines)


# -- the run --------------------------------------------------------------------------------


@dataclass
class Result:
    workers: int
    figures: dict[str, Any] = field(default_factory=dict)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # 200 processes must not race to write .pyc files
    env["PYTHONUNBUFFERED"] = "1"
    for key in [k for k in env if k.startswith("GOOSE_")]:
        del env[key]  # the command line is the whole story
    return env


def run(args: argparse.Namespace, workdir: Path) -> Result:
    n = args.workers
    res = Result(n)
    f = res.figures
    lt = workdir / "loadtest.py"
    lt.write_text(LOAD_TEST)
    report = workdir / "report.json"
    env = child_env()
    tport = free_port()
    target = subprocess.Popen([sys.executable, __file__, "--serve-target", str(tport)], start_new_session=True)
    rds = RedisProc(workdir)
    rds.client.config_set("maxclients", "10000")
    logs: list[IO[bytes]] = []
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, extra: list[str], niceness: int = 0) -> subprocess.Popen[bytes]:
        log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed below
        logs.append(log)
        argv = [sys.executable, "-m", "goose_redis", "-f", str(lt), "--gaggle", GAGGLE,
                "--redis-url", rds.url(name), *extra]  # fmt: skip
        p = subprocess.Popen(argv, stdout=log, stderr=log, env=env, stdin=subprocess.DEVNULL,
                             preexec_fn=(lambda: os.nice(niceness)) if niceness else None)  # fmt: skip
        procs.append(p)
        return p

    watch = ControlWatch(rds.client, f"goose:{GAGGLE}:control")
    try:
        wait_for(lambda: _answers(tport), 20, "the target")
        manager = start(
            "manager",
            ["--manager", "--expect-workers", str(n), "-u", str(n), "-r", str(n), "-t", f"{args.run_time:.0f}s",
             "--no-reset-metrics", "--final-wait", "60s", "--host", f"http://127.0.0.1:{tport}",
             "--report-file", str(report), "-v"],
        )  # fmt: skip
        t_launch = time.monotonic()
        # In a deployment the Manager has a core of its own; here 200 Workers share its two.
        # Niced, they cannot starve it, so its loop keeps its own cadence (--workers-nice 0: not).
        workers = [start(f"worker{i + 1}", ["--worker", "-q"], args.workers_nice) for i in range(n)]
        f["launch_s"] = time.monotonic() - t_launch
        state_key = f"goose:{GAGGLE}:run"
        wait_for(lambda: rds.client.hget(state_key, "state") == b"running", args.barrier_timeout, "the start")
        t_running = time.monotonic()
        # The subscriber thread may be a moment behind Redis on a busy machine.
        wait_for(lambda: watch.barrier()[1] is not None, 30, "the start wake-up")
        last_ready, t_start, registers = watch.barrier()
        f["registers"] = registers
        f["start_up_s"] = (last_ready - t_launch) if last_ready else None
        f["barrier_s"] = (t_start - last_ready) if (t_start and last_ready) else None
        f["seen_running_s"] = t_running - t_launch
        f["rss_worker_mb"] = sum(rss_mb(w.pid) for w in workers[:10]) / min(10, n)
        f["rss_manager_mb_start"] = rss_mb(manager.pid)

        # Steady phase: every user launched (1 s at -r N) and the first metrics interval over.
        settle = 1.0 + 1.0 + 2.0 + 1.0
        window = max(5.0, args.run_time - settle - 3.0)
        time.sleep(settle)
        wpids = [w.pid for w in workers]
        rpid = redis_pid(rds.client)
        prof = start_profile(manager.pid, window, workdir / "manager.pyspy") if args.profile else None
        c0, (in0, out0) = commandstats(rds.client), net_bytes(rds.client)
        m0, r0, w0, t0 = cpu_seconds(manager.pid), cpu_seconds(rpid), cpu_of(wpids), time.monotonic()
        time.sleep(window)
        c1, (in1, out1) = commandstats(rds.client), net_bytes(rds.client)
        m1, r1, w1, t1 = cpu_seconds(manager.pid), cpu_seconds(rpid), cpu_of(wpids), time.monotonic()
        f["rss_manager_mb"] = rss_mb(manager.pid)
        f["load_avg"] = os.getloadavg()[0]  # the Workers' wake-ups count too
        dt = t1 - t0
        f["window_s"] = dt
        f["manager_cpu_pct"] = 100.0 * (m1 - m0) / dt
        f["manager_cpu_per_worker"] = (m1 - m0) / dt / n  # CPU seconds per Worker per second
        f["redis_cpu_pct"] = 100.0 * (r1 - r0) / dt
        f["workers_cpu_pct"] = 100.0 * (w1 - w0) / dt
        calls = c1 - c0
        for noise in ("info", "config|set", "client|list", "subscribe", "ping"):
            calls.pop(noise, None)
        f["redis_cmds_per_s"] = sum(calls.values()) / dt
        f["by_command"] = {k: v / dt for k, v in calls.most_common()}
        f["net_in_per_s"] = (in1 - in0) / dt
        f["net_out_per_s"] = (out1 - out0) / dt
        if prof is not None:
            _, err = prof.communicate(timeout=window + 30)
            raw = workdir / "manager.pyspy"
            summary = summarise_profile(raw) if raw.exists() else f"py-spy failed: {err.decode(errors='replace')}"
            Path(args.profile).write_text(summary + "\n")
            f["profile"] = args.profile

        code = manager.wait(args.run_time + 120)
        f["manager_exit"] = code
        w_codes = Counter(w.wait(120) for w in workers)
        f["worker_exits"] = dict(w_codes)
        f["target_count"] = target_count(tport)
    finally:
        watch.close()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)
        for log in logs:
            log.close()
        rds.stop()
        target.terminate()
        target.wait(10)

    manager_log = (workdir / "manager.log").read_text(errors="replace")
    f["manager_ready_line"] = next((ln for ln in manager_log.splitlines() if "workers ready" in ln), "")
    doc = json.loads(report.read_text())
    f["report_count"] = doc["aggregated"]["count"]
    f["report_failures"] = doc["aggregated"]["fail_count"]
    f["report_workers"] = len(doc["workers"])
    f["workers_done"] = sum(1 for w in doc["workers"] if w.get("state") == "done")
    f["verdict"] = doc["verdict"]
    f["exact"] = doc["aggregated"]["count"] == f["target_count"] and f["workers_done"] == n
    if args.keep:
        kept = Path(args.keep)
        shutil.copytree(workdir, kept, dirs_exist_ok=True)
        f["kept"] = str(kept)
    return res


def _answers(port: int) -> bool:
    try:
        target_count(port)
        return True
    except OSError:
        return False


def print_result(res: Result, args: argparse.Namespace) -> None:
    f = res.figures
    n = res.workers

    def secs(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f} s"

    print()
    print(f"gaggle of {n} Workers, 1 user each, wait 1 s; run time {args.run_time:.0f} s; steady window "
          f"{f['window_s']:.1f} s")  # fmt: skip
    rows = [
        ("launching the processes (Popen)", secs(f["launch_s"])),
        ("launch -> last Worker at the barrier (start-up)", secs(f["start_up_s"])),
        ("barrier: last Worker ready -> Manager publishes start", secs(f["barrier_s"])),
        ("barrier wake-ups seen (register: 2 per Worker)", f"{f['registers']}"),
        ("Manager CPU, steady", f"{f['manager_cpu_pct']:.1f} % of a core"),
        ("Manager CPU per Worker", f"{1e6 * f['manager_cpu_per_worker']:.0f} µs per Worker per second"),
        ("Manager RSS at start / steady", f"{f['rss_manager_mb_start']:.0f} / {f['rss_manager_mb']:.0f} MB"),
        ("Worker RSS (mean of 10)", f"{f['rss_worker_mb']:.0f} MB"),
        (
            "Workers' CPU, all together",
            f"{f['workers_cpu_pct']:.0f} % of a core ({f['workers_cpu_pct'] / n:.2f} % each)",
        ),  # fmt: skip
        ("Manager liveness polls (HMGET per Worker)", f"{f['by_command'].get('hmget', 0.0) / n:.1f} a second"),
        ("Redis CPU", f"{f['redis_cpu_pct']:.1f} % of a core"),
        ("Redis commands/s", f"{f['redis_cmds_per_s']:,.0f}"),
        ("Redis net in / out", f"{f['net_in_per_s'] / 1e3:,.0f} / {f['net_out_per_s'] / 1e3:,.0f} kB/s"),
        ("target's count / report's count", f"{f['target_count']:,} / {f['report_count']:,}"),
        ("Workers done / in the report", f"{f['workers_done']} / {f['report_workers']}"),
        ("totals exact", "yes" if f["exact"] else "NO"),
        ("verdict", f"exit {f['verdict']['exit_code']}, {f['verdict']['reasons'] or 'no problems'}"),
        ("exit codes: Manager / Workers", f"{f['manager_exit']} / {f['worker_exits']}"),
        ("load average at the end of the window", f"{f['load_avg']:.1f}"),
    ]
    print("| figure | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    every = ", ".join(f"{k} {v:,.1f}" for k, v in f["by_command"].items())
    print(f"\nRedis commands per second, all clients: {every}")
    print(f"Manager: {f['manager_ready_line']}")
    if "profile" in f:
        print(f"\nManager profile (py-spy, steady window):\n{Path(f['profile']).read_text()}")
    if "kept" in f:
        print(f"logs and report kept in {f['kept']}")


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares ``y = a + b * n`` over (n, y) points: (a, b)."""
    k = len(points)
    mx = sum(n for n, _ in points) / k
    my = sum(y for _, y in points) / k
    sxx = sum((n - mx) ** 2 for n, _ in points)
    b = sum((n - mx) * (y - my) for n, y in points) / sxx if sxx else 0.0
    return my - b * mx, b


def print_projection(results: list[Result]) -> None:
    """Fixed and per-Worker cost from several sizes, and what they imply for 1,000 and 10,000."""
    if len({r.workers for r in results}) < 2:
        return
    print("\n| Workers | Manager CPU | Redis CPU | Redis commands/s | barrier |")
    print("|---|---|---|---|---|")
    for r in results:
        f = r.figures
        barrier = "n/a" if f["barrier_s"] is None else f"{f['barrier_s']:.2f} s"
        print(f"| {r.workers} | {f['manager_cpu_pct']:.1f} % | {f['redis_cpu_pct']:.1f} % |"
              f" {f['redis_cmds_per_s']:,.0f} | {barrier} |")  # fmt: skip
    print("\nfitted over these sizes (a + b * Workers), projected:")
    for label, key in (("Manager CPU %", "manager_cpu_pct"), ("Redis CPU %", "redis_cpu_pct"),
                       ("Redis commands/s", "redis_cmds_per_s")):  # fmt: skip
        a, b = fit([(r.workers, float(r.figures[key])) for r in results])
        print(f"  {label}: {a:,.2f} + {b:,.4f} per Worker -> 1,000 Workers {a + 1000 * b:,.1f},"
              f" 10,000 Workers {a + 10000 * b:,.1f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="200", help="Worker processes (one user each); a list (50,100,200) sweeps")
    ap.add_argument("--run-time", type=float, default=30.0, help="run time in seconds")
    ap.add_argument("--barrier-timeout", type=float, default=600.0, help="how long the processes may take to start")
    ap.add_argument("--profile", metavar="FILE", help="py-spy the Manager over the steady window; summary to FILE")
    ap.add_argument("--keep", metavar="DIR", help="copy the logs and the report to DIR")
    ap.add_argument("--workers-nice", type=int, default=10, help="niceness added to the Workers (default 10)")
    ap.add_argument("--serve-target", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_target is not None:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        serve_target(args.serve_target)
        return
    sizes = [int(x) for x in str(args.workers).split(",") if x.strip()]
    results = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            print(f"running: {n} Workers, {args.run_time:.0f} s ...", file=sys.stderr, flush=True)
            one = argparse.Namespace(**{**vars(args), "workers": n})
            if len(sizes) > 1 and args.profile:
                one.profile = f"{args.profile}.{n}"
            if len(sizes) > 1 and args.keep:
                one.keep = f"{args.keep}/{n}"
            res = run(one, Path(tmp))
        print_result(res, one)
        results.append(res)
    print_projection(results)


if __name__ == "__main__":
    main()
