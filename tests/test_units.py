"""Pure logic of the engine, no sockets: durations, schedules, filters, the load-test
hash, metric rows and their wire form, sketches, the time series and option validation."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from goose_redis import Scenario, Transaction, User
from goose_redis.config import build_config, redact_url
from goose_redis.durations import format_duration, parse_duration
from goose_redis.errors import InvalidOption
from goose_redis.metrics import MAX_ERROR_TEXT, MAX_ERRORS_PER_ROW, OTHER_ERRORS, Metrics, RowStats, WireError
from goose_redis.report.data import PERCENTILES, row_dict
from goose_redis.scenario import LoadTest, filter_scenarios, plan_scenario, round_robin, scenario_slots
from goose_redis.series import MAX_BUCKETS, Series
from goose_redis.shape import Slot, simple
from goose_redis.sketch import (
    MAX_KEY,
    MAX_WIRE_BINS,
    MIN_KEY,
    SketchWireError,
    new_sketch,
    quantile,
    sketch_from_wire,
    sketch_to_wire,
)
from goose_redis.user import Response


async def _noop(user: User) -> None:
    return None


def tx(name: str, **kw: Any) -> Transaction:
    return Transaction(_noop, name=name, **kw)


def names(scenario: Scenario, ids: tuple[int, ...] | list[int]) -> list[str]:
    return [scenario.transactions[i].display_name for i in ids]


def wire_trip(obj: Any) -> Any:
    """Through orjson, as a Worker's delta travels through Redis."""
    return orjson.loads(orjson.dumps(obj))


# ---------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("1h", 3600.0),
        ("1h30m5", 5405.0),  # Goose: trailing bare seconds
        ("1h2m3s", 3723.0),
        ("1.5s", 1.5),
        ("0.5", 0.5),
        (" 2M ", 120.0),
        ("0", 0.0),
    ],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "   ", "abc", "10x", "s", "1m1m", "5s3", "30 s", "-5", "1e3", "inf", "1,5s"])
def test_durations_reject_garbage(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value)  # a reason a user can read


def test_format_duration() -> None:
    assert format_duration(95.0) == "00:01:35"
    assert format_duration(3723.4) == "01:02:03"
    assert format_duration(0) == "00:00:00"


# ---------------------------------------------------------------------------- schedules


def test_round_robin_interleaves_weights_reduced_by_gcd() -> None:
    assert round_robin([7, 8], [3, 2]) == [7, 8, 7, 8, 7]
    assert round_robin([7, 8], [6, 4]) == [7, 8, 7, 8, 7]  # gcd 2
    assert round_robin([1, 2, 3], [1, 1, 1]) == [1, 2, 3]
    assert round_robin([1, 2], [1, 3]) == [1, 2, 2, 2]
    assert round_robin([], []) == []


def test_scenario_slots_and_users_round_robin() -> None:
    assert scenario_slots([4, 1]) == [0, 1, 0, 0, 0]
    a, b = Scenario("A", weight=3).register(tx("a")), Scenario("B", weight=1).register(tx("b"))
    lt = LoadTest([a, b])
    assigned = [lt.scenario_for_user(i) for i in range(8)]
    assert assigned == [0, 1, 0, 0, 0, 1, 0, 0]
    assert assigned.count(0) == 6 and assigned.count(1) == 2


def test_plan_orders_on_start_sequences_unsequenced_on_stop() -> None:
    s = Scenario("Order").register(
        tx("u1"),
        tx("s2a", sequence=2, weight=2),
        tx("stop2", on_stop=True, sequence=2),
        tx("s1", sequence=1),
        tx("u2", weight=2),
        tx("start", on_start=True),
        tx("s2b", sequence=2),
        tx("stop1", on_stop=True, sequence=1),
        tx("s0", sequence=0),
    )
    planned = plan_scenario(0, s)
    assert names(s, planned.on_start) == ["start"]
    # sequence 0, 1, then 2 (weights 2:1 interleaved), then unsequenced (1:2) in registration order
    assert names(s, planned.schedule) == ["s0", "s1", "s2a", "s2b", "s2a", "u1", "u2", "u2"]
    assert names(s, planned.on_stop) == ["stop1", "stop2"]


def test_plan_reduces_weights_by_the_scenario_wide_gcd() -> None:
    # As Goose: one gcd over every transaction, so a lone sequenced weight still counts.
    s = Scenario("Gcd").register(tx("seq", sequence=1, weight=4), tx("a", weight=2), tx("b", weight=6))
    assert names(s, plan_scenario(0, s).schedule) == ["seq", "seq", "a", "b", "b", "b"]
    lone = Scenario("Lone").register(tx("first", sequence=1, weight=3), tx("rest"))
    assert names(lone, plan_scenario(0, lone).schedule) == ["first", "first", "first", "rest"]


def test_on_start_and_on_stop_run_once_each_in_sequence_order() -> None:
    s = Scenario("Once each").register(
        tx("late start", on_start=True, sequence=2, weight=3),
        tx("early start", on_start=True, sequence=1),
        tx("plain start", on_start=True),
        tx("work", weight=2),
        tx("bye", on_stop=True, weight=2),
    )
    planned = plan_scenario(0, s)
    assert names(s, planned.on_start) == ["early start", "late start", "plain start"]
    assert names(s, planned.schedule) == ["work", "work"]
    assert names(s, planned.on_stop) == ["bye"]


def test_plan_with_only_on_start_is_valid_and_has_empty_schedule() -> None:
    s = Scenario("Once").register(tx("login", on_start=True))
    planned = plan_scenario(0, s)
    assert planned.schedule == () and names(s, planned.on_start) == ["login"]


def test_decorator_registers_transactions() -> None:
    s = Scenario("Deco")

    @s.transaction("first", weight=2, sequence=1)
    async def first(user: User) -> None:
        return None

    @s.transaction()
    async def second(user: User) -> None:
        return None

    assert [t.display_name for t in s.transactions] == ["first", "second"]
    assert s.transactions[0].weight == 2 and s.transactions[0].sequence == 1
    assert names(s, plan_scenario(0, s).schedule) == ["first", "first", "second"]


@pytest.mark.parametrize(
    ("scenario", "option"),
    [
        (Scenario("Zero Weight", weight=0).register(tx("a")), "scenario weight"),
        (Scenario("Empty One"), "scenario"),
        (Scenario("Bad Wait", wait=(2.0, 1.0)).register(tx("a")), "scenario wait"),
        (Scenario("Neg Wait", wait=(-1.0, 1.0)).register(tx("a")), "scenario wait"),
        (Scenario("Tx Weight").register(tx("bad tx", weight=0)), "transaction weight"),
    ],
)
def test_invalid_scenarios_name_the_scenario(scenario: Scenario, option: str) -> None:
    with pytest.raises(InvalidOption) as info:
        LoadTest([scenario])
    assert info.value.option == option
    assert repr(scenario.name) in info.value.detail


def test_machine_name_and_filter_with_wildcards() -> None:
    anon = Scenario("AnonBrowsingUser").register(tx("a"))
    auth = Scenario("Auth Browsing-User").register(tx("b"))
    api = Scenario("API_v2").register(tx("c"))
    every = [anon, auth, api]
    assert [s.machine_name for s in every] == ["anonbrowsinguser", "authbrowsinguser", "apiv2"]
    assert filter_scenarios(every, None) == every
    assert filter_scenarios(every, "") == every
    assert filter_scenarios(every, "*browsinguser") == [anon, auth]
    assert filter_scenarios(every, "AUTH*") == [auth]  # case does not matter
    assert filter_scenarios(every, "apiv2, anon*") == [anon, api]  # definition order kept
    assert filter_scenarios(every, "a*") == every
    assert filter_scenarios(every, "apiv?") == [api]
    with pytest.raises(InvalidOption) as info:
        filter_scenarios(every, "anon*,nosuch")
    assert info.value.option == "--scenarios"
    assert "'nosuch'" in info.value.detail and "anonbrowsinguser" in info.value.detail


def test_describe_lists_scenarios_and_transactions() -> None:
    s = Scenario("Shop", weight=2).register(tx("browse", weight=3), tx("login", on_start=True, sequence=1))
    text = LoadTest([s]).describe()
    assert "Shop (machine name: shop, weight: 2)" in text
    assert "  - browse (weight: 3)" in text
    assert "  - login (weight: 1, sequence: 1, on_start)" in text


def _shop(weight: int = 1, tx_weight: int = 3, fn: Callable[[User], Any] = _noop, host: str | None = None) -> Scenario:
    return Scenario("Shop", weight=weight, host=host).register(Transaction(fn, name="browse", weight=tx_weight))


def test_load_test_hash_is_stable_and_follows_the_shape() -> None:
    async def other(user: User) -> None:
        await user.get("/elsewhere")

    base = LoadTest([_shop()]).hash()
    assert len(base) == 16 and int(base, 16) >= 0
    assert LoadTest([_shop()]).hash() == base  # built again: same hash
    assert LoadTest([_shop(fn=other)]).hash() == base  # function bodies are not part of it (as Goose)
    assert LoadTest([_shop(weight=2)]).hash() != base
    assert LoadTest([_shop(tx_weight=4)]).hash() != base
    assert LoadTest([_shop(host="http://127.0.0.1:1")]).hash() != base
    renamed = Scenario("Shop").register(Transaction(_noop, name="look", weight=3))
    assert LoadTest([renamed]).hash() != base
    sequenced = Scenario("Shop").register(Transaction(_noop, name="browse", weight=3, sequence=1))
    assert LoadTest([sequenced]).hash() != base


def test_full_hash_covers_scenarios_filtered_out() -> None:
    a, b = _shop(), Scenario("Other").register(tx("x"))
    filtered = LoadTest(filter_scenarios([a, b], "shop"), [a, b])
    assert [s.name for s in filtered.scenarios] == ["Shop"]
    assert filtered.full_hash() == LoadTest([a, b]).hash()
    assert filtered.hash() == LoadTest([a]).hash() != filtered.full_hash()


def test_users_launch_at_the_hatch_rate_and_split_over_slots() -> None:
    """User ``i`` starts at ``i / rate``; Worker ``k`` of ``n`` runs users ``k, k + n, ...``."""
    shape = simple(5, 0.5, None)
    t, times = -1.0, []
    while (nxt := shape.next_change(t)) is not None:
        times.append((round(nxt, 6), shape.users_at(nxt)))
        t = nxt
    assert times == [(0.0, 1), (0.5, 2), (1.0, 3), (1.5, 4), (2.0, 5)]
    halves = [Slot.of(k, 2) for k in range(2)]
    assert [[h.index(j) for j in range(h.count(5))] for h in halves] == [[0, 2, 4], [1, 3]]
    lt = LoadTest([Scenario("A", weight=2).register(tx("a")), Scenario("B").register(tx("b"))])
    assert [lt.scenario_for_user(i) for i in range(5)] == [0, 1, 0, 0, 1]


# ---------------------------------------------------------------------------- responses


def test_response_validation_helpers() -> None:
    r = Response("GET", "/x", "http://h/x", 0.0, 1.0, 200, "OK", None, b'{"a": [1]}', True, None)
    assert r.ok and r.json() == {"a": [1]} and r.text == '{"a": [1]}'
    r.fail("no welcome text")
    assert not r.ok and r.error == "no welcome text"
    r.succeed()
    assert r.ok and r.error is None
    r._recorded = True  # its transaction ended: the outcome is final
    r.fail("too late")
    assert r.ok and r.error is None


# ---------------------------------------------------------------------------- metric rows


def _filled_row(values: list[float], fail_every: int = 0) -> RowStats:
    row = RowStats()
    for i, ms in enumerate(values):
        failed = bool(fail_every) and i % fail_every == 0
        row.record(ms, not failed, 500 if failed else 200, "500 Internal Server Error" if failed else None, 100 + i)
    return row


def _row_state(row: RowStats) -> tuple[Any, ...]:
    return (
        row.count, row.fail_count, round(row.total_ms, 6), row.min_ms, row.max_ms,
        row.status_codes, row.errors, [quantile(row.sketch, q) for q in (0.5, 0.9, 0.99, 0.999)], row.bytes,
    )  # fmt: skip


def test_row_record_counts_everything() -> None:
    row = RowStats()
    row.record(5.0, True, 200)
    row.record(1.5, False, 404, "404 Not Found")
    row.record(9.25, False, None, "connection failed: 127.0.0.1:1: Connection refused")
    row.record(-0.1, True, 200)  # clock noise: clamped to 0
    assert row.count == 4 and row.fail_count == 2
    assert row.min_ms == 0.0 and row.max_ms == 9.25
    assert row.total_ms == pytest.approx(15.75)
    assert row.status_codes == {200: 2, 404: 1}
    assert row.errors == {"404 Not Found": 1, "connection failed: 127.0.0.1:1: Connection refused": 1}
    assert int(row.sketch.count) == 4
    # A failure without a text counts, with no error entry.
    row.record(1.0, False, 200, None)
    assert row.fail_count == 3 and sum(row.errors.values()) == 2


def test_row_errors_are_capped_in_length_and_number() -> None:
    row = RowStats()
    row.record(1.0, False, None, "x" * 1000)
    assert list(row.errors) == ["x" * MAX_ERROR_TEXT]
    for i in range(MAX_ERRORS_PER_ROW + 50):
        row.record(1.0, False, None, f"error {i}")
    assert len(row.errors) == MAX_ERRORS_PER_ROW + 1
    assert row.errors[OTHER_ERRORS] == 51
    assert sum(row.errors.values()) == row.fail_count == MAX_ERRORS_PER_ROW + 51


def test_row_merge_equals_recording_everything_in_one() -> None:
    rng = random.Random(7)
    a_vals = [rng.uniform(0.2, 50.0) for _ in range(700)]
    b_vals = [rng.lognormvariate(1.0, 1.0) for _ in range(300)]
    a, b = _filled_row(a_vals, fail_every=7), _filled_row(b_vals, fail_every=11)
    together = RowStats()  # the same requests with the same outcomes, in one row
    for vals, every in ((a_vals, 7), (b_vals, 11)):
        for i, ms in enumerate(vals):
            failed = i % every == 0
            together.record(
                ms, not failed, 500 if failed else 200, "500 Internal Server Error" if failed else None, 100 + i
            )
    a.merge(b)
    assert _row_state(a) == _row_state(together)
    empty = RowStats()
    a.merge(empty)
    assert _row_state(a) == _row_state(together)
    empty.merge(a)
    assert _row_state(empty) == _row_state(together)


def test_row_wire_round_trip() -> None:
    row = _filled_row([0.0, 0.3, 1.0, 2.5, 2.5, 80.0, 1234.5], fail_every=3)
    again = RowStats.from_wire(wire_trip(row.to_wire()))
    assert _row_state(again) == _row_state(row)
    blank = RowStats.from_wire(wire_trip(RowStats().to_wire()))
    assert blank.count == 0 and blank.min_ms == math.inf and blank.status_codes == {}


def _good_row_wire() -> dict[str, Any]:
    wire: dict[str, Any] = wire_trip(_filled_row([1.0, 2.0, 3.0], fail_every=2).to_wire())
    return wire


def _without(w: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in w.items() if k != key}


@pytest.mark.parametrize(
    "mutate",
    [
        lambda w: "not a row",
        lambda w: [w],
        lambda w: _without(w, "n"),
        lambda w: _without(w, "sk"),
        lambda w: {**w, "n": "3"},
        lambda w: {**w, "n": -1},
        lambda w: {**w, "f": 4},  # more failures than requests
        lambda w: {**w, "sc": [200, 3]},
        lambda w: {**w, "sc": {"200": -1}},
        lambda w: {**w, "sc": {"ok": 1}},
        lambda w: {**w, "err": {"boom": "many"}},
        lambda w: {**w, "sum": "lots"},
        lambda w: {**w, "max": None},
        lambda w: {**w, "sk": {"o": 0, "b": [], "z": 0}},
        lambda w: {**w, "sk": [0, 1, -1]},
        lambda w: _without(w, "by"),
        lambda w: {**w, "by": -5},
        lambda w: {**w, "by": 2.5},
    ],
)
def test_row_from_wire_rejects_garbage(mutate: Callable[[dict[str, Any]], object]) -> None:
    with pytest.raises(WireError):
        RowStats.from_wire(mutate(_good_row_wire()))


def test_row_bytes_add_up_merge_and_reach_the_report_rows() -> None:
    row = RowStats()
    row.record(1.0, True, 200, None, 1500)
    row.record(2.0, False, 500, "500 Internal Server Error", 20)
    row.record(3.0, False, None, "connection failed", 0)  # no response: no bytes
    assert row.bytes == 1520
    other = RowStats()
    other.record(1.0, True, 200, None, 480)
    row.merge(other)
    assert row.bytes == 2000 and RowStats.from_wire(wire_trip(row.to_wire())).bytes == 2000
    d = row_dict("/x", row, 10.0, with_status=True)
    assert (d["bytes"], d["mean_bytes"]) == (2000, 500.0)
    empty = row_dict("/y", RowStats(), 10.0, with_status=True)
    assert (empty["bytes"], empty["mean_bytes"]) == (0, None)
    # transaction and scenario rows carry no bytes
    assert "bytes" not in row_dict("tx", row, 10.0) and "mean_bytes" not in row_dict("tx", row, 10.0)


def test_metrics_wire_round_trip_and_merge() -> None:
    m = Metrics()
    m.request_row("GET", "/a").record(1.0, True, 200)
    m.request_row("GET", "/a").record(3.0, False, 503, "503 Service Unavailable")
    m.request_row("POST", "/b").record(2.0, True, 201)
    m.transaction_row(0, 1).record(4.0, True)
    m.scenario_row(0).record(10.0, False)
    m.series.record(1_700_000_000.2, "GET /a", 1.0, True)
    m.series.record(1_700_000_001.7, "GET /a", 3.0, False)
    again = Metrics.from_wire(wire_trip(m.to_wire()))
    assert set(again.requests) == {("GET", "/a"), ("POST", "/b")}
    for key, row in m.requests.items():
        assert _row_state(again.requests[key]) == _row_state(row)
    assert _row_state(again.transactions[(0, 1)]) == _row_state(m.transactions[(0, 1)])
    assert _row_state(again.scenarios[0]) == _row_state(m.scenarios[0])
    assert again.series.to_wire() == m.series.to_wire()
    assert again.total_requests() == (3, 1)
    agg = again.aggregated()
    assert agg.count == 3 and agg.status_codes == {200: 1, 503: 1, 201: 1} and agg.max_ms == 3.0

    again.merge(m)
    assert again.total_requests() == (6, 2)
    assert again.scenarios[0].count == 2
    assert sum(b.requests for b in again.series.buckets.values()) == 4

    delta = again.take()
    assert delta.total_requests() == (6, 2) and again.is_empty()


@pytest.mark.parametrize(
    "wire",
    [
        None,
        [],
        {"req": [], "tx": [], "sc": []},  # no series
        {"req": "rows", "tx": [], "sc": [], "ser": {"i": 1, "b": []}},
        {"req": [["GET", "/a"]], "tx": [], "sc": [], "ser": {"i": 1, "b": []}},
        {"req": [[1, "/a", {}]], "tx": [], "sc": [], "ser": {"i": 1, "b": []}},
        {"req": [], "tx": [[-1, 0, {}]], "sc": [], "ser": {"i": 1, "b": []}},
        {"req": [], "tx": [], "sc": [[0]], "ser": {"i": 1, "b": []}},
        {"req": [], "tx": [], "sc": [], "ser": {"i": 0, "b": []}},
        {"req": [], "tx": [], "sc": [], "ser": {"i": 1, "b": [[0, 1, 0]]}},
        {"req": [], "tx": [], "sc": [], "ser": {"i": 1, "b": [[0, 1, 0, [0, 5, 1], [], {}]]}},
    ],
)
def test_metrics_from_wire_rejects_garbage(wire: object) -> None:
    with pytest.raises(WireError):
        Metrics.from_wire(wire)


def test_metrics_from_wire_rejects_a_bad_row_inside() -> None:
    wire = wire_trip(Metrics().to_wire())
    bad = _good_row_wire()
    bad["f"] = 99
    wire["req"] = [["GET", "/a", bad]]
    with pytest.raises(WireError):
        Metrics.from_wire(wire)


# ---------------------------------------------------------------------------- sketches


def test_sketch_wire_round_trip_keeps_quantiles() -> None:
    rng = random.Random(3)
    sketch = new_sketch()
    values = [0.0, 0.0] + [rng.lognormvariate(0.5, 1.2) for _ in range(2000)]
    for v in values:
        sketch.add(v)
    again = sketch_from_wire(wire_trip(sketch_to_wire(sketch)))
    assert again.count == sketch.count == len(values)
    for q in (0.0, 0.001, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0):
        assert quantile(again, q) == quantile(sketch, q)
    # 1 % relative accuracy against the exact value at the same rank
    ordered = sorted(values)
    for q in (0.0, 0.01, 0.5, 0.9, 0.99, 0.999, 1.0):
        exact = ordered[int(q * (len(values) - 1))]
        got = quantile(again, q)
        assert got is not None and abs(got - exact) <= 0.01 * exact + 1e-12


def test_sketch_agrees_with_the_ddsketch_package() -> None:
    """Same mapping, same rank rule: within a bin of the reference implementation."""
    from ddsketch import DDSketch

    rng = random.Random(5)
    ours, ref = new_sketch(), DDSketch(relative_accuracy=0.01)
    for _ in range(5000):
        v = rng.lognormvariate(1.0, 1.5)
        ours.add(v)
        ref.add(v)
    for q in (0.01, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999):
        a, b = quantile(ours, q), ref.get_quantile_value(q)
        assert a is not None and b is not None and abs(a - b) <= 0.0201 * b, (q, a, b)


def test_sketch_wire_of_empty_and_zero_only() -> None:
    empty = sketch_from_wire(wire_trip(sketch_to_wire(new_sketch())))
    assert empty.count == 0 and quantile(empty, 0.5) is None
    zeros = new_sketch()
    zeros.add(0.0)
    zeros.add(0.0)
    wire = sketch_to_wire(zeros)
    assert wire == [2]
    again = sketch_from_wire(wire_trip(wire))
    assert again.count == 2 and quantile(again, 0.9) == 0


def test_sketch_wire_size_follows_occupied_bins_not_samples_nor_spread() -> None:
    sketch = new_sketch()
    for _ in range(10_000):
        sketch.add(5.0)
    assert len(sketch_to_wire(sketch)) == 3  # zero count, key, count
    # Far apart: only the two occupied bins travel, not the thousand empty ones between.
    sketch.add(0.001)
    sketch.add(60_000.0)
    wire = sketch_to_wire(sketch)
    assert len(wire) == 7 and wire[0] == 0
    assert sum(wire[2::2]) == 10_002 and all(step > 0 for step in wire[3::2])


@pytest.mark.parametrize(
    "wire",
    [
        "sketch",
        {"o": 0, "b": [1], "z": 0},  # protocol 1's form
        [],
        [0, 5],  # a key without its count
        [0.5],
        [0, 5.0, 1],
        [0, 5, 1.5],
        [0, "5", 1],
        [True, 5, 1],
        [-1, 5, 1],
        [0, 5, 0],  # an empty bin is never sent
        [0, 5, -1],
        [0, 5, 1, 0, 1],  # keys must increase
        [0, 5, 1, -2, 1],
        [0] + [1, 1] * (MAX_WIRE_BINS + 1),
        # well typed but outside any latency
        [0, 10**9, 1],
        [0, MAX_KEY, 1, 1, 1],
        [0, MIN_KEY - 1, 1],
        [0, MIN_KEY, 1, 10**9, 1],
    ],
)
def test_sketch_from_wire_rejects_garbage(wire: object) -> None:
    with pytest.raises(SketchWireError):
        sketch_from_wire(wire)


def test_sketch_keys_of_real_latencies_are_well_inside_the_bounds() -> None:
    for ms in (1e-6, 1e-3, 1.0, 86_400_000.0):
        sketch = new_sketch()
        sketch.add(ms)
        again = sketch_from_wire(sketch_to_wire(sketch))
        assert again.count == 1 and again.zero == 0
        got = quantile(again, 0.5)
        assert got is not None and abs(got - ms) <= 0.01 * ms


def test_merged_percentiles_through_the_wire_stay_within_one_percent() -> None:
    """Many Workers' deltas, some with their sketches kept back for later deltas (as the
    flush loop does), through the real entry encoding, merged as the Manager does: every
    percentile within 1 % of the exact one over the same samples."""
    from goose_redis.gaggle.protocol import MetricsEntry

    rng = random.Random(17)
    merged = Metrics()
    samples: dict[str, list[float]] = {"/a": [], "/b": []}
    for worker in range(4):
        m = Metrics()
        for seq in range(1, 13):
            for _ in range(rng.randint(0, 400)):
                name = rng.choice(["/a", "/b"])
                ms = rng.lognormvariate(1.0 if name == "/a" else 3.0, 0.8)
                if rng.random() < 0.02:
                    ms *= 50
                samples[name].append(ms)
                m.request_row("GET", name).record(ms, True, 200, None, 10)
            final = seq == 12
            delta = m.take(sketches=final or seq % 5 == 0)
            entry = MetricsEntry("run", f"w{worker}", seq, "steady", final, 0, 0, delta)
            merged.merge(MetricsEntry.from_fields(entry.to_fields()).metrics)
    for name, values in samples.items():
        row = merged.requests[("GET", name)]
        assert row.count == row.sketch.count == len(values)
        ordered = sorted(values)
        for _, q in PERCENTILES:
            exact = ordered[int(q * (len(ordered) - 1))]
            got = quantile(row.sketch, q)
            assert got is not None and abs(got - exact) <= 0.01 * exact + 1e-12, (name, q, got, exact)


def test_kept_back_sketches_leave_with_the_next_full_delta() -> None:
    m = Metrics()
    m.request_row("GET", "/a").record(2.0, True, 200)
    m.transaction_row(0, 0).record(3.0, True)
    first = m.take(sketches=False)
    assert first.requests[("GET", "/a")].count == 1 and first.requests[("GET", "/a")].sketch.count == 0
    assert first.transactions[(0, 0)].sketch.count == 0
    m.request_row("GET", "/b").record(4.0, True, 200)
    second = m.take()  # carries /a's kept sketch in a row of count 0
    assert second.requests[("GET", "/a")].count == 0 and second.requests[("GET", "/a")].sketch.count == 1
    assert second.transactions[(0, 0)].sketch.count == 1 and second.requests[("GET", "/b")].sketch.count == 1
    total = Metrics()
    total.merge(first)
    total.merge(second)
    a = total.requests[("GET", "/a")]
    assert (a.count, a.sketch.count, a.min_ms, a.max_ms) == (1, 1, 2.0, 2.0)
    assert m.take().is_empty()  # nothing kept any more
    # The reset hands over kept sketches with the rows, too.
    m.request_row("GET", "/a").record(5.0, True, 200)
    m.take(sketches=False)
    assert m.take_totals().requests[("GET", "/a")].sketch.count == 1


# ---------------------------------------------------------------------------- series


def test_series_buckets_by_time_and_counts_rows() -> None:
    s = Series()
    s.record(100.1, "GET /a", 1.0, True)
    s.record(100.9, "GET /a", 2.0, False)
    s.record(102.5, "GET /b", 3.0, True)
    s.set_users(100.5, 3)
    s.set_users(100.6, 2)
    assert sorted(s.buckets) == [100, 102]
    b = s.buckets[100]
    assert (b.requests, b.failures, b.rows, b.users) == (2, 1, {"GET /a": [2, 1]}, {"": 3})
    points = s.points(100.0)
    assert [p["t"] for p in points] == [0.0, 1.0, 2.0]  # the gap is filled
    assert [p["requests"] for p in points] == [2, 0, 1]
    assert [p["users"] for p in points] == [3, 3, 3]  # carried forward
    assert points[0]["p50_ms"] is not None and points[1]["p50_ms"] is None


def test_series_coarsening_keeps_totals_and_bounds_size() -> None:
    s = Series()
    start = 1_700_000_000
    seconds = MAX_BUCKETS * 2 + 123
    for i in range(seconds):
        s.record(start + i + 0.5, "GET /a" if i % 2 else "GET /b", float(1 + i % 10), i % 5 != 0)
    assert len(s.buckets) <= MAX_BUCKETS
    assert s.interval_s >= 2
    assert all(key % s.interval_s == 0 for key in s.buckets)
    assert sum(b.requests for b in s.buckets.values()) == seconds
    assert sum(b.failures for b in s.buckets.values()) == len([i for i in range(seconds) if i % 5 == 0])
    assert sum(int(b.sketch.count) for b in s.buckets.values()) == seconds
    a_total = sum(b.rows.get("GET /a", [0, 0])[0] for b in s.buckets.values())
    b_total = sum(b.rows.get("GET /b", [0, 0])[0] for b in s.buckets.values())
    assert (a_total, b_total) == (seconds // 2, seconds - seconds // 2)
    again = Series.from_wire(wire_trip(s.to_wire()))
    assert again.interval_s == s.interval_s and again.to_wire() == s.to_wire()
    points = s.points(float(start))
    assert len(points) <= MAX_BUCKETS + 1
    assert sum(p["requests"] for p in points) == seconds


def test_series_merge_adds_requests_and_users_per_source() -> None:
    a, b = Series(), Series()
    a.record(50.2, "GET /", 1.0, True)
    a.set_users(50.3, 4, "w1")
    b.record(50.7, "GET /", 2.0, False)
    b.set_users(50.4, 3, "w2")
    total = Series()
    total.merge(a)
    total.merge(b)
    bucket = total.buckets[50]
    assert (bucket.requests, bucket.failures, bucket.rows["GET /"]) == (2, 1, [2, 1])
    assert total.points(50.0)[0]["users"] == 7
    total.merge(a)  # the same source again: its users are not counted twice
    assert total.points(50.0)[0]["users"] == 7


@pytest.mark.parametrize(
    "wire",
    [
        [],
        {"i": "1", "b": []},
        {"i": 1, "b": "x"},
        {"i": 1, "b": [[0, 1, 0, {"o": 0, "b": [1], "z": 0}, {"GET /": [1]}, {}]]},
        {"i": 1, "b": [[0, 1, 0, {"o": 0, "b": [1], "z": 0}, {}, {"": "3"}]]},
        {"i": 1, "b": [[0.5, 1, 0, {"o": 0, "b": [1], "z": 0}, {}, {}]]},
        {"i": 1, "b": [[0, 1, 0, {"o": 10**9, "b": [1], "z": 0}, {}, {}]]},
        {"i": 1, "b": [[i, 0, 0, {"o": 0, "b": [], "z": 0}, {}, {}] for i in range(MAX_BUCKETS + 1)]},
    ],
)
def test_series_from_wire_rejects_garbage(wire: object) -> None:
    with pytest.raises(ValueError):
        Series.from_wire(wire)


# ---------------------------------------------------------------------------- config


def raw(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"host": "http://127.0.0.1:8080"}
    base.update(kw)
    return base


def test_build_config_defaults() -> None:
    c = build_config(raw(), [None])
    assert c.users == (os.cpu_count() or 1)
    assert c.hatch_rate == 1.0 and c.startup_time_s is None and c.hatch_interval_s == 1.0
    assert c.run_time_s is None and c.iterations is None
    assert c.timeout_s == 60.0 and c.reset_metrics and c.report_files == ()
    assert c.host == "http://127.0.0.1:8080"
    assert not (c.manager or c.worker or c.list_only)


def test_build_config_values() -> None:
    c = build_config(
        raw(
            host="https://example.test:8443/",
            users="12",
            hatch_rate="2.5",
            run_time="1h30m",
            timeout="2.5s",
            no_reset_metrics=True,
            running_metrics="10",
            report_file=("a.json", "b.HTML", "c.md", "d.csv"),
            request_log="req.jsonl",
            verbose=2,
        ),
        [None],
    )
    assert (c.users, c.hatch_rate, c.run_time_s, c.timeout_s) == (12, 2.5, 5400.0, 2.5)
    assert c.host == "https://example.test:8443"  # trailing slash dropped
    assert not c.reset_metrics and c.running_metrics_s == 10.0
    assert c.report_files == ("a.json", "b.HTML", "c.md", "d.csv") and c.request_log == "req.jsonl"
    assert c.hatch_interval_s == pytest.approx(0.4)
    s = build_config(raw(users="5", startup_time="2s", iterations="3"), [None])
    assert s.hatch_rate is None and s.startup_time_s == 2.0 and s.hatch_interval_s == pytest.approx(0.4)
    assert s.iterations == 3 and s.run_time_s is None
    assert build_config(raw(users="1", startup_time="2s"), [None]).hatch_interval_s == 0.0
    assert build_config(raw(run_time="0"), [None]).run_time_s == 0.0


def test_build_config_scenario_hosts_stand_in_for_host() -> None:
    c = build_config({}, ["http://127.0.0.1:1", "http://127.0.0.1:2"])
    assert c.host is None
    assert build_config({"list_only": True}, [None]).list_only  # --list needs no host
    assert build_config({"worker": True}, [None]).worker  # a Worker takes the host from its Manager


@pytest.mark.parametrize(
    ("options", "hosts", "option", "detail"),
    [
        ({"host": None}, [None], "--host", "host must be defined"),
        ({"host": None}, ["http://127.0.0.1:1", None], "--host", "host must be defined"),
        ({"host": None}, [], "--host", "host must be defined"),
        ({"host": "127.0.0.1:8080"}, [None], "--host", "http:// or https://"),
        ({"host": "ftp://x"}, [None], "--host", "http:// or https://"),
        ({"host": "http://h"}, ["nope"], "scenario host", "http:// or https://"),
        ({"users": "0"}, [None], "--users", "at least 1"),
        ({"users": "two"}, [None], "--users", "whole number"),
        ({"users": "1.5"}, [None], "--users", "whole number"),
        ({"hatch_rate": "0"}, [None], "--hatch-rate", "greater than 0"),
        ({"hatch_rate": "-1"}, [None], "--hatch-rate", "greater than 0"),
        ({"hatch_rate": "nan"}, [None], "--hatch-rate", "greater than 0"),
        ({"hatch_rate": "inf"}, [None], "--hatch-rate", "greater than 0"),
        ({"hatch_rate": "fast"}, [None], "--hatch-rate", "must be a number"),
        ({"hatch_rate": "2", "startup_time": "5s"}, [None], "--startup-time", "--hatch-rate"),
        ({"startup_time": "0"}, [None], "--startup-time", "longer than 0"),
        ({"run_time": "10x"}, [None], "--run-time", "not a duration"),
        ({"run_time": "10s", "iterations": "2"}, [None], "--run-time", "--iterations"),
        ({"iterations": "0"}, [None], "--iterations", "at least 1"),
        ({"timeout": "0"}, [None], "--timeout", "longer than 0"),
        ({"timeout": "soon"}, [None], "--timeout", "not a duration"),
        ({"running_metrics": "often"}, [None], "--running-metrics", "not a duration"),
        ({"report_file": ("ok.json", "bad.txt")}, [None], "--report-file", "unknown report format"),
        ({"expect_workers": "2"}, [None], "--expect-workers", "only for the --manager"),
        ({"manager": True, "worker": True}, [None], "--worker", "--manager"),
        ({"manager": True, "users": "2", "expect_workers": "3"}, [None], "--expect-workers", "larger"),
        ({"manager": True}, [None], "--expect-workers", "at least 1"),
        ({"worker": True, "host": None, "users": "3"}, [None], "--users", "Manager"),
        ({"test_plan": "10,1m", "users": "3"}, [None], "--test-plan", "together with --users"),
        ({"test_plan": "10,1m;x"}, [None], "--test-plan", "USERS,TIME"),
        ({"test_plan": "0,0s"}, [None], "--test-plan", "longer than 0 seconds"),
        ({"arrival_rate": "nan"}, [None], "--arrival-rate", "greater than 0"),
        ({"arrival_rate": "5", "hatch_rate": "2"}, [None], "--arrival-rate", "together with --hatch-rate"),
        ({"throttle_requests": "inf"}, [None], "--throttle-requests", "greater than 0"),
        ({"co_mitigation": "sometimes"}, [None], "--co-mitigation", "one of: disabled"),
        ({"gaggle": "a b"}, [None], "--gaggle", "letters, digits"),
        ({"redis_url": "http://r"}, [None], "--redis-url", "redis://"),
    ],
)
def test_build_config_rejects(options: dict[str, Any], hosts: list[str | None], option: str, detail: str) -> None:
    with pytest.raises(InvalidOption) as info:
        build_config(raw(**options), hosts)
    assert info.value.option == option
    assert detail in info.value.detail
    line = str(info.value)
    assert line.startswith(f'InvalidOption {{ option: "{option}", value: "') and "\n" not in line


def test_invalid_option_quotes_values() -> None:
    text = str(InvalidOption("--host", 'a"b\\c', "bad"))
    assert text == 'InvalidOption { option: "--host", value: "a\\"b\\\\c", detail: "bad" }'


def test_redact_url_hides_passwords() -> None:
    assert redact_url("redis://:s3cret@r:6379/0") == "redis://:***@r:6379/0"
    assert redact_url("redis://u:s3cret@r/0") == "redis://u:***@r/0"
    assert redact_url("redis://r:6379/0") == "redis://r:6379/0"
