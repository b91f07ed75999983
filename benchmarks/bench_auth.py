"""What --gaggle-secret costs: signing and verifying one metrics entry, with and without a secret.

A Worker signs one entry per metrics interval (2 s) and the Manager verifies one per Worker
per interval; nothing is signed per request. This prints microseconds per entry for a small
delta (one row) and a large one (200 request rows with their sketches and status codes),
so the MAC's share of encoding and decoding an entry is visible. It asserts nothing.

    python benchmarks/bench_auth.py [--rounds N]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from goose_redis.gaggle.auth import Auth, Secret
from goose_redis.gaggle.protocol import MetricsEntry
from goose_redis.metrics import Metrics


def delta(rows: int, per_row: int) -> Metrics:
    rng = random.Random(1)
    m = Metrics()
    for r in range(rows):
        row = m.request_row("GET", f"/page/{r}")
        for _ in range(per_row):
            row.record(rng.expovariate(1 / 40.0), rng.random() > 0.01, 200 if rng.random() > 0.01 else 500)
    return m


def per_call_us(fn: Callable[[], object], rounds: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - start) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    signed = Auth(Secret(b"0123456789abcdef" * 4), "bench")
    print(f"{'delta':<28} {'bytes':>8} {'encode':>10} {'+ sign':>10} {'decode':>10} {'+ verify':>10}  (us per entry)")
    for name, rows, per_row in (("1 row", 1, 100), ("200 rows", 200, 100)):
        entry = MetricsEntry("run1", "worker-1", 1, "steady", False, rows * per_row, 0, delta(rows, per_row))
        plain, mac = entry.to_fields(), entry.to_fields(signed)
        size = sum(len(v) for v in mac.values())
        figures = [
            per_call_us(lambda e=entry: e.to_fields(), args.rounds),  # type: ignore[misc]
            per_call_us(lambda e=entry: e.to_fields(signed), args.rounds),  # type: ignore[misc]
            per_call_us(lambda f=plain: MetricsEntry.from_fields(f), args.rounds),  # type: ignore[misc]
            per_call_us(lambda f=mac: MetricsEntry.from_fields(f, signed), args.rounds),  # type: ignore[misc]
        ]
        print(f"{name:<28} {size:>8} " + " ".join(f"{x:>10.1f}" for x in figures))


if __name__ == "__main__":
    main()
