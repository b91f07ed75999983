"""How fast one process launches users, how close to plan, and what a user costs in memory.

    .venv/bin/python benchmarks/bench_launch.py                      # 10,000 users at 10,000/s, then a baseline
    .venv/bin/python benchmarks/bench_launch.py --rounds 3           # three rounds, each figure per round
    .venv/bin/python benchmarks/bench_launch.py --processes 2        # the same launch on 2 processes
    .venv/bin/python benchmarks/bench_launch.py --users 5000 --rate 5000

What runs: Debian's nginx (as ``bench_peers.py`` starts it; one worker, keep-alive,
``GET /`` answered with a tiny body) and the real CLI, standalone:
``-u 10000 -r 10000 -t 2s --request-log ...``. The load test's one transaction sends one
request and then waits 30 s, so each user sends exactly one request during the run: what
is measured is the launch, not the load. The plan launches user ``i`` at ``i / rate``
seconds after the start (the last one at 0.9999 s).

It prints, per round:

* **ramp-up end**: when the runner saw its last launch done (the report's ramp-up
  phase, from ``Runner.ramp_done_at``) against the plan's 0.9999 s;
* **launch drift**: each user's first request (its ``started_at`` in the request log,
  taken just before the request goes out) against its planned moment: median, p95, max;
* **peak RSS per user**: the peak resident memory (``VmHWM``, polled from ``/proc`` for
  the whole process tree, every process's own peak added up) of the run, less the same
  of a 1-user run, over the users. Locust's figure on this machine: about 33 KB per user.

A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_peers import Nginx  # noqa: E402

LOAD_TEST = textwrap.dedent(
    """
    from goose_redis import Scenario, Transaction, User


    async def hello(user: User) -> None:
        await user.get("/", name="hello")


    # One request, then a long wait: each user sends one request while the launch is measured.
    launch = Scenario("Launch", wait=(30.0, 30.0)).register(Transaction(hello, name="hello"))
    """
)


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants alive now."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


@dataclass
class Run:
    users: int
    rate: float
    ramp_s: float  # the report's ramp-up phase: start -> the runner's ramp_done_at
    drift_ms: list[float]  # per user: first request - planned launch
    launched: int  # users that sent a request
    peak_kb: int  # the sum over the process tree of each process's peak RSS
    cpu_s: float  # CPU time of the run and its child processes
    requests: int


def run_once(workdir: Path, url: str, users: int, rate: float, processes: int) -> Run:
    lt = workdir / "launch.py"
    lt.write_text(LOAD_TEST)
    log, report = workdir / "requests.jsonl", workdir / "report.json"
    for path in workdir.glob("requests.jsonl*"):
        path.unlink()
    cmd = [sys.executable, "-m", "goose_redis", "-f", str(lt), "--host", url, "-u", str(users), "-r", f"{rate:g}",
           "-t", "2s", "--request-log", str(log), "--report-file", str(report), "-q", "--no-reset-metrics",
           *(["--processes", str(processes)] if processes != 1 else [])]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=workdir)
    peaks: dict[int, int] = {}
    while True:
        for p in tree(proc.pid):
            peaks[p] = max(peaks.get(p, 0), hwm_kb(p))
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.05)
    # wait4 counts the process and the children it reaped (the --processes children).
    cpu = usage.ru_utime + usage.ru_stime
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"the run failed ({proc.returncode}): {proc.stderr.read().decode() if proc.stderr else ''}")
    data = json.loads(report.read_text())
    start = datetime.fromisoformat(data["started_at"]).timestamp()
    ramp = next(p for p in data["phases"] if p["name"] == "ramp-up")
    first: dict[int, float] = {}
    for path in sorted(workdir.glob("requests.jsonl*")):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            user = int(entry["user"])
            first[user] = min(first.get(user, float("inf")), float(entry["started_at"]))
    interval = 1.0 / rate
    drift = sorted((t - (start + u * interval)) * 1000.0 for u, t in first.items())
    return Run(users, rate, float(ramp["duration_s"]), drift, len(first), sum(peaks.values()), cpu,
               int(data["aggregated"]["count"]))  # fmt: skip


def accepts(url: str) -> int:
    """Connections nginx has accepted so far (``stub_status``)."""
    with urllib.request.urlopen(f"{url}/nginx_status", timeout=5) as r:
        return int(r.read().decode().splitlines()[2].split()[0])


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * (len(values) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=10_000.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--processes", type=int, default=1)
    args = ap.parse_args()
    plan_s = (args.users - 1) / args.rate
    rows = [
        f"{args.users:,} users at {args.rate:,.0f}/s on {args.processes} process(es); the plan's last launch at "
        f"{plan_s:.4f} s",
        "",
        f"| round | users launched | ramp-up ended (plan {plan_s:.4f} s) | drift median | p95 | max | connections "
        "| CPU per user | peak RSS MB | baseline (1 user) MB | RSS per user |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-launch-") as tmp:
        workdir = Path(tmp)
        nginx = Nginx(workdir, None)
        try:
            for rnd in range(args.rounds):
                print(f"round {rnd + 1}: {args.users} users ...", file=sys.stderr, flush=True)
                before = accepts(nginx.url)
                big = run_once(workdir, nginx.url, args.users, args.rate, args.processes)
                opened = accepts(nginx.url) - before - 1
                base = run_once(workdir, nginx.url, 1, args.rate, args.processes)
                n = max(1, args.users - 1)
                per_user = (big.peak_kb - base.peak_kb) * 1024 / n
                cpu_us = (big.cpu_s - base.cpu_s) * 1e6 / n
                d = big.drift_ms
                rows.append(
                    f"| {rnd + 1} | {big.launched:,} | {big.ramp_s:.3f} s | {statistics.median(d):.0f} ms "
                    f"| {pct(d, 0.95):.0f} ms | {d[-1]:.0f} ms | {opened:,} | {cpu_us:.0f} µs "
                    f"| {big.peak_kb / 1024:.0f} | {base.peak_kb / 1024:.0f} | {per_user / 1024:.1f} KB |"
                )
                print(rows[-1], file=sys.stderr, flush=True)
        finally:
            nginx.stop()
    print(f"bench_launch.py, {time.strftime('%Y-%m-%d')}, load average {os.getloadavg()[0]:.1f}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
