"""The pure parts of load shaping: the shape and its slots, steering commands, the
open model's schedule, the throttle's pacing, coordinated-omission bookkeeping and
the silence judge. No sockets: these are the rules every process computes alike."""

from __future__ import annotations

import asyncio
import math
import random
import time

import pytest

from goose_redis.arrival import parse_arrival
from goose_redis.co import Cadence, backfill
from goose_redis.errors import InvalidOption
from goose_redis.gaggle.protocol import ProtocolError, ShapeMessage
from goose_redis.gaggle.silence import Silence
from goose_redis.shape import (
    IDLE,
    WHOLE,
    Segment,
    Shape,
    Slot,
    history,
    parse_plan,
    planned,
    simple,
    with_hatch_rate,
    with_plan,
    with_run_time,
    with_users,
)
from goose_redis.throttle import RunStopped, Throttle


def changes(shape: Shape, slot: Slot = WHOLE, after: float = -1.0) -> list[tuple[float, int]]:
    """Every (time, count) at which ``slot``'s user count changes, by following next_change."""
    out: list[tuple[float, int]] = []
    t = after
    prev = slot.count(shape.users_at(after))
    while (nxt := shape.next_change(t, slot)) is not None:
        count = slot.count(shape.users_at(nxt))
        if count != prev:  # next_change may wake early (a step at a boundary): only real changes count
            out.append((round(nxt, 6), count))
            prev = count
        t = nxt
        assert len(out) < 10_000
    return out


def brute(shape: Shape, slot: Slot, until: float, step: float = 0.001) -> list[tuple[float, int]]:
    """The same, by sampling every millisecond (the oracle)."""
    out: list[tuple[float, int]] = []
    prev = 0
    for k in range(int(until / step) + 2):
        t = k * step
        c = slot.count(shape.users_at(t))
        if c != prev:
            out.append((t, c))
            prev = c
    return out


def same_changes(a: list[tuple[float, int]], b: list[tuple[float, int]]) -> bool:
    """Equal counts at times within the oracle's millisecond."""
    pairs = zip(a, b, strict=False)
    return len(a) == len(b) and all(ca == cb and abs(ta - tb) <= 0.0015 for (ta, ca), (tb, cb) in pairs)


# -- the shape ----------------------------------------------------------------------------------


def test_simple_shape_is_goose_hatch_rate_then_run_time() -> None:
    s = simple(4, 0.5, 10.0)
    assert [s.users_at(t) for t in (0.0, 0.49, 0.5, 1.0, 1.5, 100.0)] == [1, 1, 2, 3, 4, 4]
    assert s.end_s == pytest.approx(11.5)  # the run time counts after the last launch
    assert s.reset_s == pytest.approx(1.5) and s.peak == 4
    assert simple(4, 0.5, None, reset=False).reset_s is None


def test_goose_plan_grammar_and_meaning() -> None:
    steps = parse_plan("--test-plan", "10,1m;10,5m;0,0s")
    assert steps == [(10, 60.0), (10, 300.0), (0, 0.0)]
    s = planned(steps)
    assert s.end_s == 360.0 and s.reset_s is None and s.peak == 10
    # The floor of the line from 0 to 10 over a minute: a user every 6 s, the 10th at 60 s.
    assert [s.users_at(t) for t in (0, 5.9, 6, 30, 59.9, 60)] == [0, 0, 1, 5, 9, 10]
    assert s.users_at(359.9) == 10 and s.users_at(360) == 0  # "0,0s": everyone stops at once
    assert parse_plan("p", "4,5;") == [(4, 5.0)]  # a trailing ';' and a bare number of seconds


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "USERS,TIME"),
        ("10", "USERS,TIME"),
        ("10,", "USERS,TIME"),
        ("10,1m,3", "USERS,TIME"),
        ("ten,1m", "whole number"),
        ("1.5,1m", "whole number"),
        ("-1,1m", "0 or more"),
        ("10,forever", "not a duration"),
        ("10,-5s", "not a duration"),
        ("0,0s", "longer than 0 seconds"),
        ("10,31d", "not a duration"),
        ("10,800h", "longer than 30 days"),
        ("2000000,1m", "more than"),
        ("10,1m;;5,1m", "USERS,TIME"),
    ],
)
def test_bad_plans_are_invalid_options(text: str, why: str) -> None:
    with pytest.raises(InvalidOption, match=why) as err:
        parse_plan("--test-plan", text)
    assert err.value.option == "--test-plan" and err.value.value == text


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_next_change_agrees_with_sampling_for_every_slot(workers: int) -> None:
    shape = planned(parse_plan("p", "7,2s;7,1s;3,1.5s;9,0s;9,1s;0,2s"))
    for k in range(workers):
        slot = Slot.of(k, workers)
        assert same_changes(changes(shape, slot), brute(shape, slot, 8.0)), slot


def test_slots_partition_the_users_and_sub_slots_partition_a_worker() -> None:
    for users in range(0, 40):
        workers = [Slot.of(k, 3) for k in range(3)]
        procs = [w.sub(j, 2) for w in workers for j in range(2)]
        held = sorted(p.index(i) for p in procs for i in range(p.count(users)))
        assert held == list(range(users))
        for w in workers:  # a Worker's processes hold exactly the Worker's users
            assert sum(w.sub(j, 2).count(users) for j in range(2)) == w.count(users)
    assert IDLE.count(10**6) == 0


def test_users_go_newest_first_on_a_decrease() -> None:
    s = planned(parse_plan("p", "4,0s;4,1s;0,2s"))
    # The whole gaggle: 4 at once, held 1 s, then one fewer every half second; 0 at the end.
    assert changes(s) == [(0.0, 4), (1.5, 3), (2.0, 2), (2.5, 1), (3.0, 0)]
    # Worker 0 of 2 holds users 0 and 2: user 2 (the newer) stops first, at 2 users left.
    assert changes(s, Slot.of(0, 2)) == [(0.0, 2), (2.0, 1), (3.0, 0)]
    # A peak between a ramp up and a ramp down is really reached.
    peak = planned(parse_plan("p", "4,2s;0,2s"))
    assert peak.users_at(2.0) == 4 and peak.users_at(2.4) == 4 and peak.users_at(2.5) == 3


def test_history_is_the_steps_the_run_went_through() -> None:
    s = planned(parse_plan("p", "4,2s;4,4s;0,2s"))
    steps = history(s, 8.0)
    assert [(x.action, x.start, x.end, x.at, x.until) for x in steps] == [
        ("increase", 0, 4, 0.0, 2.0), ("maintain", 4, 4, 2.0, 6.0), ("decrease", 4, 0, 6.0, 8.0),
    ]  # fmt: skip
    # A run stopped early shows how far it got.
    early = history(s, 1.0)
    assert [(x.action, x.start, x.end) for x in early] == [("increase", 0, 2)]


# -- steering -----------------------------------------------------------------------------------


def test_users_command_moves_at_the_hatch_rate_from_now() -> None:
    s = simple(4, 0.5, 60.0)  # hatch rate 2/s
    s2 = with_users(s, 10.0, 8)
    assert s2.users_at(9.99) == 4 and s2.users_at(10.0) == 5  # the first step at once
    assert s2.users_at(11.5) == 8 and s2.users_at(11.49) == 7
    assert s2.end_s == s.end_s  # the run still ends when it would have
    down = with_users(s2, 20.0, 1)
    assert down.users_at(20.0) == 7 and down.users_at(23.0) == 1
    # A command during the initial ramp ends it: the metrics reset happens then.
    assert with_users(s, 0.7, 3).reset_s == 0.7


def test_hatch_rate_command_speeds_up_a_ramp_in_progress() -> None:
    s = simple(10, 1.0, None)  # one a second
    fast = with_hatch_rate(s, 2.0, 10.0)  # at 3 users, ten a second from now
    assert fast.hatch_rate == 10.0
    assert fast.users_at(2.0) == 4 and fast.users_at(2.6) == 10
    # After the ramp it only changes the rate later commands use.
    done = with_hatch_rate(s, 20.0, 5.0)
    assert done.segments == s.segments and done.hatch_rate == 5.0


def test_run_time_and_plan_commands_count_from_now() -> None:
    s = simple(2, 1.0, 10.0)
    assert with_run_time(s, 5.0, 3.0).end_s == 8.0
    p = with_plan(s, 5.0, parse_plan("p", "6,2s;0,1s"))
    assert p.users_at(5.0) == 2 and p.users_at(5.5) == 3 and p.users_at(7.0) == 6 and p.users_at(8.0) == 0
    assert p.end_s == 8.0


def test_shape_message_round_trip_and_range_checks() -> None:
    s = with_users(planned(parse_plan("p", "5,3s;5,10s")), 4.0, 9)
    msg = ShapeMessage.of("run1", 3, 1700000000.0, s, ["w1", "w2"])
    back = ShapeMessage.from_bytes(msg.to_bytes())
    assert back == msg and back.shape() == s
    arrival = parse_arrival("a", "10", None)
    open_model = ShapeMessage.of("run1", 1, None, Shape((Segment(0, 0, 4, 0),), None, None, 1.0, 5.0, arrival), [])
    assert ShapeMessage.from_bytes(open_model.to_bytes()).shape().arrival == arrival
    for bad in (
        {"segments": [[0, 0, -4, 1]]},
        {"segments": [[0, 0, 1.5, 1]]},
        {"segments": [[0, 0, 4]]},
        {"workers": ["w1", "w1"]},
        {"workers": [""]},
        {"hatch_rate": 0},
        {"epoch": -1},
        {"throttle": -5.0},
        {"end_s": 1e12},
    ):
        import dataclasses

        forged = dataclasses.replace(msg, **bad)  # type: ignore[arg-type]
        with pytest.raises(ProtocolError):
            ShapeMessage.from_bytes(forged.to_bytes())


# -- the open model -----------------------------------------------------------------------------


def test_constant_arrival_rate_schedule() -> None:
    plan = parse_arrival("--arrival-rate", "30", 10.0)
    assert plan.end_s == 10.0
    assert plan.next_for(-1.0) == (0, 0.0)
    q, when = plan.next_for(0.0) or (0, 0.0)
    assert q == 1 and when == pytest.approx(1 / 30)
    assert plan.due_by(10.0) == pytest.approx(300.0)
    assert plan.time_of(300) == pytest.approx(10.0) and plan.time_of(301) is None


def test_slots_split_the_iterations_exactly() -> None:
    plan = parse_arrival("r", "5,2s;20,3s;20,1s", None)
    total = math.floor(plan.due_by(plan.end_s or 0) + 1e-9) + 1
    got = []
    for slot in (Slot.of(0, 3), Slot.of(1, 3), Slot.of(2, 3)):
        t = -1.0
        while (nxt := plan.next_for(t, slot)) is not None:
            got.append(nxt[0])
            t = nxt[1]
    assert sorted(got) == list(range(total))


def test_ramping_rate_follows_the_integral() -> None:
    plan = parse_arrival("r", "10,10s;10,10s", None)
    assert plan.due_by(10.0) == pytest.approx(50.0)  # 0 -> 10/s over 10 s
    assert plan.due_by(20.0) == pytest.approx(150.0)
    assert plan.time_of(50) == pytest.approx(10.0)
    assert plan.rate_at(5.0) == pytest.approx(5.0)


@pytest.mark.parametrize("text", ["0", "-3", "nan", "inf", "fast", "2000000", "5,1m;x", "1e9,1s"])
def test_bad_arrival_rates(text: str) -> None:
    with pytest.raises(InvalidOption) as err:
        parse_arrival("--arrival-rate", text, None)
    assert err.value.option == "--arrival-rate"


# -- throttle, coordinated omission, silence -------------------------------------------------------


def test_throttle_paces_and_releases_waiters_on_stop() -> None:
    async def main() -> tuple[float, int]:
        throttle = Throttle(50.0)
        t0 = time.monotonic()
        for _ in range(11):
            await throttle.acquire()
        elapsed = time.monotonic() - t0
        throttle.set_rate(0)  # hold everything
        waiter = asyncio.create_task(throttle.acquire())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        throttle.stop()
        stopped = 0
        try:
            await waiter
        except RunStopped:
            stopped = 1
        return elapsed, stopped

    elapsed, stopped = asyncio.run(main())
    assert elapsed >= 10 / 50 - 0.01  # eleven slots 20 ms apart (a lower bound: never flaky)
    assert stopped == 1


def test_unthrottled_acquire_does_not_wait() -> None:
    async def main() -> int:
        throttle = Throttle(None)
        for _ in range(1000):
            await throttle.acquire()
        return 1

    assert asyncio.run(main()) == 1


def test_cadence_learns_then_flags_stalls_only() -> None:
    c = Cadence("average")
    assert c.finish_pass(100.0) is None and c.finish_pass(120.0) is None
    assert c.finish_pass(200.0) is None  # under twice the cadence
    assert c.finish_pass(1000.0) == pytest.approx(140.0)  # a stall: backfill at the cadence
    assert c.passes == 3  # the stall did not move the cadence
    assert Cadence("minimum").expected_ms() is None
    m = Cadence("minimum")
    for ms in (100.0, 50.0, 80.0):
        m.finish_pass(ms)
    assert m.expected_ms() == 50.0
    assert backfill(1000.0, 300.0) == [700.0, 400.0]
    assert backfill(100.0, 300.0) == [] and backfill(100.0, 0.0) == []
    assert len(backfill(1e12, 1.0)) == 10_000  # bounded


def test_silence_counts_only_observed_time() -> None:
    s = Silence(cap_s=1.0)
    assert s.observe(b"1", 0.0) == 0.0
    assert s.observe(b"1", 0.5) == 0.5
    assert s.observe(b"1", 20.5) == 1.5  # frozen for 20 s ourselves: one read's worth counts
    s.blind()
    assert s.observe(b"1", 60.0) == 1.5  # a failed read in between: the gap counts nothing
    assert s.observe(None, 61.0) == 2.5  # nothing there is no news
    assert s.observe(b"2", 61.5) == 0.0


def test_random_plans_keep_slots_consistent() -> None:
    rng = random.Random(7)
    for _ in range(30):
        text = ";".join(f"{rng.randint(0, 12)},{rng.choice([0, 0.5, 1, 2])}s" for _ in range(rng.randint(1, 5)))
        try:
            shape = planned(parse_plan("p", text))
        except InvalidOption:
            continue
        n = rng.randint(1, 4)
        until = (shape.end_s or 0) + 0.5
        for k in range(n):
            assert same_changes(changes(shape, Slot.of(k, n)), brute(shape, Slot.of(k, n), until)), (text, k, n)
