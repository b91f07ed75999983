"""Bytes a Worker's metrics deltas cost Redis, by request rate: the wire form, measured.

    python benchmarks/bench_wire.py                  # 10, 1,000 and 10,000 requests/s, 10 request rows
    python benchmarks/bench_wire.py --rates 100,5000 --seconds 60
    python benchmarks/bench_wire.py --redis          # also XADD them into a private redis-server

A Worker's load is simulated into the real ``Metrics`` (the recorder's calls: request,
transaction and scenario rows, and the per-second series): one scenario of 10
transactions of one request each, so 10 request rows, 10 transaction rows and a
scenario row, with latencies drawn per row from a log-normal distribution (medians 1 to
30 ms, a tail to about a second). Every ``METRICS_INTERVAL_S`` a delta is cut
(``Metrics.take``) and encoded as the Worker sends it (``MetricsEntry.to_fields``);
the figures are the mean bytes per entry and per second (fields and values, the stream
entry's payload). With ``--redis`` each entry is also XADDed into a private
``redis-server`` and ``INFO stats`` gives the bytes Redis received (commands included).

At the end the deltas are decoded and merged (as the Manager does) and the merged
percentiles are compared with the exact percentiles of the same samples. A benchmark,
not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from goose_redis.gaggle.keys import METRICS_INTERVAL_S, SKETCH_EVERY  # noqa: E402
from goose_redis.gaggle.outbox import sketches_due  # noqa: E402
from goose_redis.gaggle.protocol import MetricsEntry  # noqa: E402
from goose_redis.metrics import Metrics  # noqa: E402
from goose_redis.recorder import Recorder  # noqa: E402
from goose_redis.report.data import PERCENTILES  # noqa: E402
from goose_redis.sketch import quantile  # noqa: E402

ROWS = 10
START = 1_700_000_000.0


def simulate(
    rate: float, seconds: float, seed: int, sketch_every: int = SKETCH_EVERY
) -> tuple[list[MetricsEntry], list[list[float]]]:
    """Deltas of a Worker doing ``rate`` requests a second for ``seconds``; and the exact samples per row."""
    rng = random.Random(seed)
    metrics = Metrics()
    recorder = Recorder(metrics)
    medians = [1.0 * (30.0 ** (i / (ROWS - 1))) for i in range(ROWS)]  # 1 .. 30 ms
    samples: list[list[float]] = [[] for _ in range(ROWS)]
    entries: list[MetricsEntry] = []
    n = int(rate * seconds)
    step = 1.0 / rate
    next_cut = START + METRICS_INTERVAL_S
    seq = sent = 0
    iteration_ms = 0.0
    for i in range(n):
        t = START + i * step
        if t >= next_cut:
            seq += 1
            due = sketches_due(metrics, seq) if sketch_every == SKETCH_EVERY else seq % sketch_every == 0
            delta = metrics.take(sketches=due)  # as the Worker's flush loop
            sent += delta.total_requests()[0]
            entries.append(MetricsEntry("run", "worker-1", seq, "steady", False, sent, 0, delta))
            next_cut += METRICS_INTERVAL_S
        row = i % ROWS
        ms = rng.lognormvariate(math.log(medians[row]), 0.6)
        if rng.random() < 0.01:
            ms *= rng.uniform(5, 40)  # a tail
        samples[row].append(ms)
        size = 2000 + row * 100
        name = f"/page/{row}"
        metrics.request_row("GET", name).record(ms, True, 200, None, size)
        metrics.series.record(t, f"GET {name}", ms, True)
        recorder.transaction(0, row, ms + 0.05, True, None)
        iteration_ms += ms + 0.05
        if row == ROWS - 1:
            recorder.scenario(0, iteration_ms, True)
            iteration_ms = 0.0
        if i % 1000 == 0:
            metrics.series.set_users(t, 50)
    seq += 1
    delta = metrics.take()
    entries.append(MetricsEntry("run", "worker-1", seq, "steady", True, sent + delta.total_requests()[0], 0, delta))
    return entries, samples


def entry_bytes(entry: MetricsEntry) -> int:
    return sum(len(k) + len(v) for k, v in entry.to_fields().items())


def merged_error(entries: list[MetricsEntry], samples: list[list[float]]) -> float:
    """Largest relative error of a merged (decoded) percentile against the exact one."""
    merged = Metrics()
    for e in entries:
        merged.merge(MetricsEntry.from_fields(e.to_fields()).metrics)
    worst = 0.0
    for row in range(ROWS):
        exact = sorted(samples[row])
        got = merged.requests[("GET", f"/page/{row}")]
        for _, q in PERCENTILES:
            v = quantile(got.sketch, q)
            x = exact[int(q * (len(exact) - 1))]
            assert v is not None
            worst = max(worst, abs(v - x) / x)
    return worst


def redis_bytes(entries: list[MetricsEntry], workdir: Path) -> int:
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        r = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        before = int(r.info("stats")["total_net_input_bytes"])
        for e in entries:
            r.xadd("goose:bench:metrics", e.to_fields())  # type: ignore[arg-type]
        after = int(r.info("stats")["total_net_input_bytes"])
        return after - before
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="10,1000,10000", help="requests per second of one Worker, comma-separated")
    ap.add_argument("--seconds", type=float, default=30.0, help="simulated run time per rate")
    ap.add_argument("--redis", action="store_true", help="also XADD into a private redis-server and count its input")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(f"{ROWS} request rows, {ROWS} transaction rows, 1 scenario row; one delta every {METRICS_INTERVAL_S:g} s; "
          f"{args.seconds:g} s simulated per rate\n")  # fmt: skip
    head = "| requests/s | entries | bytes per entry (mean) | bytes/s per Worker | largest entry |"
    if args.redis:
        head += " Redis input bytes/s |"
    head += " merged percentile error (max) |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    with tempfile.TemporaryDirectory(prefix="bench-wire-") as tmp:
        for rate in (float(x) for x in args.rates.split(",")):
            entries, samples = simulate(rate, args.seconds, args.seed)
            sizes = [entry_bytes(e) for e in entries]
            line = (f"| {rate:,.0f} | {len(entries)} | {sum(sizes) / len(sizes):,.0f} | "
                    f"{sum(sizes) / args.seconds:,.0f} | {max(sizes):,} |")  # fmt: skip
            if args.redis:
                line += f" {redis_bytes(entries, Path(tmp)) / args.seconds:,.0f} |"
            line += f" {100 * merged_error(entries, samples):.2f} % |"
            print(line, flush=True)


if __name__ == "__main__":
    main()
