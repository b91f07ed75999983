"""What the Manager's checkpoint costs (goose_redis/gaggle/checkpoint.py): bytes and CPU time.

A realistic merged state: ROWS request rows (with transaction and scenario rows), response
times spread over two decades (so each sketch holds a couple of hundred bins), and a series
of BUCKETS one-second buckets (an hour by default: the most a series keeps before its
interval doubles). Prints, for a whole write (after a Redis outage, or once a minute) and for
a steady write (the rows plus the two buckets a delta touches, about once a second):
the bytes sent to Redis and the CPU time to build them, plus the time to find the changed
buckets (a signature per bucket).

    python benchmarks/bench_checkpoint.py [--rows 20] [--buckets 3600]
"""

from __future__ import annotations

import argparse
import random
import time

import orjson

from goose_redis.gaggle.checkpoint import bucket_signature, bucket_to_wire, rows_only
from goose_redis.metrics import Metrics


def build(rows: int, buckets: int) -> Metrics:
    rng = random.Random(1)
    m = Metrics()
    start = 1_795_449_000
    for b in range(buckets):
        t = start + b + 0.5
        for r in range(rows):
            ms = rng.lognormvariate(3, 0.8)
            m.request_row("GET", f"/page/{r}").record(ms, True, 200)
            m.series.record(t, f"GET /page/{r}", ms, True)
        m.series.set_users(t, 50, "w1")
    for r in range(rows):
        m.transaction_row(0, r).merge(m.request_row("GET", f"/page/{r}"))
    m.scenario_row(0).merge(m.aggregated())
    return m


def timed(fn: object, rounds: int = 5) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--buckets", type=int, default=3600)
    args = ap.parse_args()
    m = build(args.rows, args.buckets)
    series = m.series

    def rows_part() -> bytes:
        return orjson.dumps({"m": rows_only(m).to_wire(), "r": rows_only(Metrics()).to_wire()})

    def whole() -> int:
        return len(rows_part()) + sum(len(bucket_to_wire(k, b)) for k, b in series.buckets.items())

    def steady() -> int:
        last = sorted(series.buckets)[-2:]
        return len(rows_part()) + sum(len(bucket_to_wire(k, series.buckets[k])) for k in last)

    def signatures() -> int:
        return len({k: bucket_signature(b) for k, b in series.buckets.items()})

    t_whole, n_whole = timed(whole)
    t_steady, n_steady = timed(steady)
    t_sig, _ = timed(signatures)
    print(f"{args.rows} request rows, {len(series.buckets)} series buckets of {series.interval_s} s")
    print(f"whole checkpoint:  {n_whole / 1024:9.1f} KiB  {t_whole * 1000:8.1f} ms CPU")
    print(f"steady checkpoint: {n_steady / 1024:9.1f} KiB  {t_steady * 1000:8.1f} ms CPU  (rows + 2 buckets)")
    print(f"changed-bucket scan:            {t_sig * 1000:8.1f} ms CPU")


if __name__ == "__main__":
    main()
