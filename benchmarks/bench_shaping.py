"""How precisely the load shape holds: the throttle, the arrival rate, and plan launches.

    .venv/bin/python benchmarks/bench_shaping.py                 # about 5 minutes (60 s per case)
    .venv/bin/python benchmarks/bench_shaping.py --duration 20   # a quicker look

Every case runs the real CLI (standalone, or a Manager and 2 Workers on a private
redis-server) against a counting target on 127.0.0.1 that records when each request
was sent (the ``x-sent`` header, the sender's clock) and by which user:

* throttle: ``--throttle-requests 100`` with 20 users and no waits, standalone and on 2
  Workers: requests per second over the steady window, as counted by the target, over
  what was asked;
* arrival rate: ``--arrival-rate 50`` against a 20 ms target with 10 users, standalone and
  on 2 Workers: iterations per second achieved over asked, and the dropped iterations;
* plan drift: ``--test-plan "40,20s;40,5s"`` on 2 Workers (a launch every ~0.51 s,
  alternating Workers): each user's first request against the moment the shape launches
  it (``Segment.step_time``), as the median, 95th percentile and largest drift.

A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))

from support import CountingTarget, start_redis  # noqa: E402

from goose_redis.shape import parse_plan, planned  # noqa: E402

LOAD_TEST = textwrap.dedent(
    """
    import os
    import time

    from goose_redis import Scenario, Transaction, User


    async def page(user: User) -> None:
        headers = {{"x-user": str(user.index), "x-pid": str(os.getpid()), "x-sent": repr(time.time())}}
        await user.get("{path}", name="page", headers=headers)


    bench = Scenario("Bench", wait={wait!r}).register(Transaction(page, name="page"))
    """
)


def sent(target: CountingTarget) -> list[tuple[float, int]]:
    out = []
    for r in target.recent():
        h = {k.lower(): v for k, v in r.headers.items()}
        if "x-sent" in h:
            out.append((float(h["x-sent"]), int(h["x-user"])))
    return sorted(out)


def cli(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "goose_redis", *args], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def run(
    workdir: Path, target: CountingTarget, load_test: Path, args: list[str], redis_url: str | None
) -> dict[str, Any]:
    """One run, standalone or a Manager with 2 Workers; returns the JSON report."""
    out = workdir / "report.json"
    base = ["-f", str(load_test), "--host", target.url, "--report-file", str(out), "-q"]
    if redis_url is None:
        cli([*base, *args]).wait()
    else:
        manager = cli([*base, "--manager", "--expect-workers", "2", "--redis-url", redis_url, *args])
        workers = [cli(["-f", str(load_test), "--worker", "--redis-url", redis_url, "-q"]) for _ in range(2)]
        manager.wait()
        for w in workers:
            w.wait()
    return dict(json.loads(out.read_text()))


def steady_rate(times: list[float], skip_s: float = 2.0) -> float:
    """Requests per second between ``skip_s`` after the first and ``skip_s`` before the last."""
    lo, hi = times[0] + skip_s, times[-1] - skip_s
    return sum(1 for t in times if lo <= t < hi) / (hi - lo)


def case_throttle(workdir: Path, redis_url: str | None, duration: float) -> str:
    load_test = workdir / "throttle.py"
    load_test.write_text(LOAD_TEST.format(path="/any/x", wait=None))
    with CountingTarget(recent_limit=1_000_000) as target:
        run(workdir, target, load_test, ["-u", "20", "-r", "200", "-t", f"{duration}s",
                                         "--throttle-requests", "100"], redis_url)  # fmt: skip
        rate = steady_rate([t for t, _ in sent(target)])
    where = "2 Workers" if redis_url else "standalone"
    return f"| throttle 100/s, {where} | {rate:.2f}/s | {rate / 100:.4f} | - |"


def case_arrival(workdir: Path, redis_url: str | None, duration: float) -> str:
    load_test = workdir / "arrival.py"
    load_test.write_text(LOAD_TEST.format(path="/slow?ms=20", wait=None))
    with CountingTarget(recent_limit=1_000_000) as target:
        report = run(workdir, target, load_test, ["-u", "10", "--arrival-rate", "50", "-t", f"{duration}s"],
                     redis_url)  # fmt: skip
        rate = steady_rate([t for t, _ in sent(target)])
    where = "2 Workers" if redis_url else "standalone"
    return f"| arrival 50/s (20 ms target), {where} | {rate:.2f}/s | {rate / 50:.4f} | {report['dropped_iterations']} |"


def case_plan_drift(workdir: Path, redis_url: str) -> str:
    text = "40,20s;40,5s"
    load_test = workdir / "plan.py"
    load_test.write_text(LOAD_TEST.format(path="/any/x", wait=(0.2, 0.2)))
    with CountingTarget(recent_limit=1_000_000) as target:
        report = run(workdir, target, load_test, ["--test-plan", text], redis_url)
        first: dict[int, float] = {}
        for t, user in sent(target):
            first.setdefault(user, t)
    start = datetime.fromisoformat(report["started_at"]).timestamp()
    seg = planned(parse_plan("--test-plan", text)).segments[0]
    drift_ms = sorted(abs(first[u] - (start + seg.step_time(u))) * 1000.0 for u in first)
    p95 = drift_ms[int(0.95 * (len(drift_ms) - 1))]
    return (f"| plan 0 -> 40 users over 20 s, 2 Workers ({len(first)} launches) | median drift "
            f"{statistics.median(drift_ms):.1f} ms | p95 {p95:.1f} ms | max {drift_ms[-1]:.1f} ms |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per rate case")
    args = parser.parse_args()
    rows = ["| case | achieved | achieved / asked | dropped |", "|---|---|---|---|"]
    server = start_redis()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            for redis_url in (None, server.url):
                rows.append(case_throttle(workdir, redis_url, args.duration))
                server.flushall()
                rows.append(case_arrival(workdir, redis_url, args.duration))
                server.flushall()
            rows.append("")
            rows.append("| plan | drift of each launch from the shape's step time | | |")
            rows.append("|---|---|---|---|")
            rows.append(case_plan_drift(workdir, server.url))
    finally:
        server.cleanup()
    print(f"bench_shaping.py, {time.strftime('%Y-%m-%d')}, {args.duration:g} s per rate case")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
