"""The pure parts of the gaggle: the user split, the exactly-once ledger, the wire protocol.

No Redis and no processes here: these are the rules the Manager and Workers rely on,
checked directly with real ``Metrics`` objects (no mocks).
"""

from __future__ import annotations

import asyncio
import random
import zlib
from pathlib import Path

import orjson
import pytest

from goose_redis.gaggle import protocol
from goose_redis.gaggle.allocation import describe_split, split_users
from goose_redis.gaggle.keys import PREFIX, Keys
from goose_redis.gaggle.ledger import WorkerLedger
from goose_redis.gaggle.link import cancel_and_wait, shift_series
from goose_redis.gaggle.protocol import (
    PROTOCOL_VERSION,
    Assignment,
    ManagerBeat,
    MetricsEntry,
    ProtocolError,
    Registration,
    StopRequest,
    decode,
)
from goose_redis.metrics import Metrics
from goose_redis.scenario import LoadTest, Scenario, Transaction
from goose_redis.series import Series
from goose_redis.shape import Slot, simple
from goose_redis.sketch import quantile


async def _noop(user: object) -> None:
    return None


def _load_test(weights: tuple[int, ...] = (1,)) -> LoadTest:
    scenarios = [Scenario(f"S{i}", weight=w).register(Transaction(_noop, name="t")) for i, w in enumerate(weights)]
    return LoadTest(scenarios)


# -- allocation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("users", "workers", "expected"),
    [(8, 2, [4, 4]), (7, 2, [4, 3]), (10, 4, [3, 3, 2, 2]), (5, 5, [1, 1, 1, 1, 1]), (1, 1, [1]), (9, 1, [9])],
)
def test_split_users_gives_the_first_workers_the_remainder(users: int, workers: int, expected: list[int]) -> None:
    assert split_users(users, workers) == expected


def test_split_users_matches_each_workers_slot() -> None:
    """The Manager's counts and the Workers' own slots must agree, or users go missing."""
    lt = _load_test((3, 1))
    for workers in range(1, 7):
        for users in range(workers, 30):
            counts = split_users(users, workers)
            assert sum(counts) == users
            assert max(counts) - min(counts) <= 1
            slots = [Slot.of(k, workers) for k in range(workers)]
            assert [s.count(users) for s in slots] == counts
            # Every gaggle user runs exactly once, on the Worker whose slot owns it.
            held = sorted(s.index(j) for s in slots for j in range(s.count(users)))
            assert held == list(range(users))
            assert all(sum(s.owns(i) for s in slots) == 1 for i in range(users))
            assert {lt.scenario_for_user(i) for i in range(users)} <= {0, 1}


def test_staggered_slots_keep_the_gaggle_wide_rate() -> None:
    """2 Workers at -r 1: each launches every 2 s, offset by 1 s, so the gaggle launches 1/s."""
    shape = simple(6, 1.0, None)

    def launches(slot: Slot) -> list[float]:
        t, out = -1.0, []
        while (nxt := shape.next_change(t, slot)) is not None:
            out.append(round(nxt, 6))
            t = nxt
        return out

    w1, w2 = launches(Slot.of(0, 2)), launches(Slot.of(1, 2))
    assert w1 == [0.0, 2.0, 4.0]
    assert w2 == [1.0, 3.0, 5.0]
    assert sorted(w1 + w2) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_describe_split_lines() -> None:
    assert describe_split(8, 2) == ["each worker to start 4 users"]
    assert describe_split(7, 2) == ["each worker to start 3 users", "assigning 1 extra user to 1 worker"]
    assert describe_split(10, 4) == ["each worker to start 2 users", "assigning 1 extra user to 2 workers"]


# -- ledger ------------------------------------------------------------------------


def test_ledger_accepts_each_seq_once_in_order() -> None:
    led = WorkerLedger()
    assert [led.accept(s) for s in (1, 2, 3)] == [True, True, True]
    assert led.watermark == 3
    assert [led.accept(s) for s in (1, 2, 3)] == [False, False, False]  # the Manager re-read the stream
    assert led.watermark == 3 and not led.above


def test_ledger_out_of_order_and_redelivery() -> None:
    led = WorkerLedger()
    assert led.accept(3) is True
    assert led.watermark == 0  # 1 and 2 are missing: the acknowledgement must not cover them
    assert led.accept(3) is False
    assert led.accept(1) is True
    assert led.watermark == 1
    assert led.accept(2) is True
    assert led.watermark == 3 and not led.above
    assert led.accept(2) is False


def test_ledger_random_redelivery_merges_everything_exactly_once() -> None:
    rng = random.Random(7)
    for _ in range(50):
        n = rng.randint(1, 40)
        deliveries = [s for s in range(1, n + 1) for _ in range(rng.randint(1, 3))]
        rng.shuffle(deliveries)
        led = WorkerLedger()
        accepted = [s for s in deliveries if led.accept(s)]
        assert sorted(accepted) == list(range(1, n + 1))
        assert led.watermark == n and not led.above


def test_ledger_complete_needs_final_and_everything_before_it() -> None:
    led = WorkerLedger()
    led.accept(1)
    led.accept(3)
    led.final_seq = 3
    assert not led.complete  # seq 2 is still on its way
    led.accept(2)
    assert led.complete
    assert not WorkerLedger().complete  # no final delta yet


# -- protocol: decode rejects what is not ours ---------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"garbage",
        b"\xff\xfe\x00",
        b"[1, 2, 3]",
        b'"a string"',
        b"42",
        b"{}",
        b'{"v": 3}',
        b'{"v": "2"}',
        b'{"v": true}',
        orjson.dumps({"v": PROTOCOL_VERSION + 1, "run_id": "x", "at": 1.0}),
        12345,
    ],
)
def test_decode_rejects_garbage_and_other_versions(raw: object) -> None:
    with pytest.raises(ProtocolError):
        decode(raw)


def test_decode_accepts_the_current_version() -> None:
    assert decode(orjson.dumps({"v": PROTOCOL_VERSION, "x": 1})) == {"v": PROTOCOL_VERSION, "x": 1}
    assert decode(f'{{"v": {PROTOCOL_VERSION}}}') == {"v": PROTOCOL_VERSION}  # str as well as bytes


def test_messages_round_trip() -> None:
    reg = Registration("host-1-ab12", "host", 4242, "0123456789abcdef", 1700000000.5)
    assert Registration.from_bytes(reg.to_bytes()) == reg
    a = Assignment("run1", 2, 3, 3, 8, "http://127.0.0.1:8080", 60.0, None, "fast*", "average")
    assert Assignment.from_bytes(a.to_bytes()) == a
    refusal = Assignment("run1", 0, 0, 0, 0, None, 1.0, None, None, refuse="full", clean=True)
    assert Assignment.from_bytes(refusal.to_bytes()) == refusal
    stop = StopRequest("worker 1", "SIGINT on worker 1", 1700000001.0)
    assert StopRequest.from_bytes(stop.to_bytes()) == stop
    beat = ManagerBeat("run1", 1700000002.0)
    assert ManagerBeat.from_bytes(beat.to_bytes()) == beat
    assert orjson.loads(beat.to_bytes())["v"] == PROTOCOL_VERSION


def test_optional_fields_take_their_defaults() -> None:
    doc = orjson.loads(Assignment("r", 1, 1, 1, 1, None, 60.0, 3, None).to_bytes())
    del doc["refuse"], doc["clean"]
    a = Assignment.from_bytes(orjson.dumps(doc))
    assert a.refuse is None and a.clean is True and a.iterations == 3


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pid", "4242"),  # a number as a string
        ("pid", True),  # bool is not an int here
        ("pid", 1.5),
        ("pid", None),
        ("id", 7),
        ("hash", ["x"]),
        ("at", "now"),
        ("at", False),
    ],
)
def test_wrong_field_types_are_rejected(field: str, value: object) -> None:
    doc = orjson.loads(Registration("w", "h", 1, "abc", 1.0).to_bytes())
    doc[field] = value
    with pytest.raises(ProtocolError, match="wrong type"):
        Registration.from_bytes(orjson.dumps(doc))


def test_missing_required_field_is_rejected() -> None:
    doc = orjson.loads(StopRequest("manager", "why", 1.0).to_bytes())
    del doc["reason"]
    with pytest.raises(ProtocolError, match="lacks 'reason'"):
        StopRequest.from_bytes(orjson.dumps(doc))


def test_optional_field_accepts_none_or_its_type_only() -> None:
    doc = orjson.loads(Assignment("r", 1, 1, 1, 1, None, 60.0, None, None).to_bytes())
    doc["iterations"] = "3"
    with pytest.raises(ProtocolError):
        Assignment.from_bytes(orjson.dumps(doc))
    doc["iterations"] = 3
    assert Assignment.from_bytes(orjson.dumps(doc)).iterations == 3


def test_an_int_is_accepted_where_a_float_is_expected() -> None:
    doc = orjson.loads(ManagerBeat("r", 1.0).to_bytes())
    doc["at"] = 1700000000  # JSON writers may drop the ".0"
    assert ManagerBeat.from_bytes(orjson.dumps(doc)).at == 1700000000


# -- MetricsEntry --------------------------------------------------------------------


def _sample_metrics() -> Metrics:
    m = Metrics()
    t0 = 1_700_000_000.0
    for i in range(200):
        ms = 1.0 + (i % 50) * 0.7
        ok = i % 10 != 0
        m.request_row("GET", "index").record(ms, ok, 200 if ok else 500, None if ok else "500 Internal Server Error")
        m.series.record(t0 + i * 0.01, "GET index", ms, ok)
    m.request_row("GET", "any x").record(3.0, False, None, "connection refused")
    m.transaction_row(0, 1).record(12.5, True)
    m.scenario_row(0).record(40.0, True)
    m.series.set_users(t0, 4, "")
    return m


def test_metrics_entry_round_trip_keeps_every_figure() -> None:
    m = _sample_metrics()
    entry = MetricsEntry("run1", "host-9-abcd", 3, "steady", True, 1234, 21, m)
    fields = entry.to_fields()
    assert set(fields) == {b"head", b"data"}
    back = MetricsEntry.from_fields(fields)
    assert (back.run_id, back.worker_id, back.seq, back.phase, back.final) == ("run1", "host-9-abcd", 3, "steady", True)
    assert (back.requests, back.failures) == (1234, 21)
    assert back.metrics.total_requests() == m.total_requests() == (201, 21)
    for key, row in m.requests.items():
        got = back.metrics.requests[key]
        assert (got.count, got.fail_count, got.status_codes, got.errors) == (
            row.count,
            row.fail_count,
            row.status_codes,
            row.errors,
        )
        assert got.total_ms == pytest.approx(row.total_ms)
        assert (got.min_ms, got.max_ms) == (row.min_ms, row.max_ms)
        for q in (0.5, 0.9, 0.99):
            assert quantile(got.sketch, q) == pytest.approx(quantile(row.sketch, q))
    assert back.metrics.transactions[(0, 1)].count == 1
    assert back.metrics.scenarios[0].count == 1
    assert back.metrics.series.to_wire() == m.series.to_wire()


def test_metrics_entry_size_does_not_grow_with_the_request_count() -> None:
    """The per-interval message grows with distinct rows, not with requests."""

    def size(n: int) -> int:
        m = Metrics()
        for i in range(n):
            ms = 1.0 + (i % 50) * 0.7
            m.request_row("GET", "index").record(ms, True, 200)
            m.series.record(1_700_000_000.0 + (i % 2), "GET index", ms, True)
        f = MetricsEntry("r", "w", 1, "steady", False, n, 0, m).to_fields()
        return len(f[b"head"]) + len(f[b"data"])

    small, large = size(1_000), size(100_000)
    assert large < small * 1.2, (small, large)


def _good_row() -> dict[str, object]:
    row: dict[str, object] = orjson.loads(orjson.dumps(_sample_metrics().requests[("GET", "index")].to_wire()))
    return row


def _fields(head: object = None, data: object = None) -> dict[bytes, bytes]:
    good = MetricsEntry("run1", "w1", 1, "steady", False, 1, 0, _sample_metrics()).to_fields()
    out = dict(good)
    if head is not None:
        out[b"head"] = head if isinstance(head, bytes) else orjson.dumps(head)
    if data is not None:  # an object is sent as the Worker sends it: JSON, compressed
        out[b"data"] = data if isinstance(data, bytes) else zlib.compress(orjson.dumps(data))
    return out


def _head(**changes: object) -> dict[str, object]:
    head = orjson.loads(_fields()[b"head"])
    head.update(changes)
    return {k: v for k, v in head.items() if v is not _DROP}


_DROP = object()


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {b"junk": b"x"},
        {b"head": b"not json", b"data": b"{}"},
        _fields(head={"v": PROTOCOL_VERSION + 1, "run": "run1"}),
        _fields(head=_head(v=_DROP)),
        _fields(head=_head(seq=0)),
        _fields(head=_head(seq=-1)),
        _fields(head=_head(seq="1")),
        _fields(head=_head(run=5)),
        _fields(head=_head(w=None)),
        _fields(head=_head(phase="later")),
        _fields(head=_head(final="yes")),
        _fields(head=_head(n="10")),
        _fields(head=_head(f=None)),
        _fields(head=_head(seq=_DROP)),
        _fields(data=b"not json"),  # not zlib data
        _fields(data=zlib.compress(b"not json")),
        _fields(data=zlib.compress(orjson.dumps(Metrics().to_wire()))[:-3]),  # truncated
        _fields(data=orjson.dumps(Metrics().to_wire())),  # JSON, not compressed: protocol 1
        {b"head": _fields()[b"head"]},  # no data
        _fields(data={"req": [["GET", "x", {**_good_row(), "sk": [0, 5, -1]}]], "tx": [], "sc": [],
                      "ser": {"i": 1, "b": []}}),  # fmt: skip
        _fields(data=[1, 2]),
        _fields(data={"req": "x", "tx": [], "sc": [], "ser": {"i": 1, "b": []}}),
        _fields(data={"req": [["GET", "x", {"n": 2, "f": 3}]], "tx": [], "sc": [], "ser": {"i": 1, "b": []}}),
        _fields(data={"req": [], "tx": [[-1, 0, {}]], "sc": [], "ser": {"i": 1, "b": []}}),
        _fields(data={"req": [], "tx": [], "sc": [], "ser": {"i": 0, "b": []}}),
        _fields(data={"req": [], "tx": [], "sc": []}),
    ],
)
def test_metrics_entry_rejects_malformed_fields(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(ProtocolError):
        MetricsEntry.from_fields(fields)


def test_keys_are_namespaced_by_gaggle() -> None:
    a, b = Keys("a"), Keys("b")
    every_a = [
        a.run,
        a.manager,
        a.workers,
        a.worker("w"),
        a.heartbeat("w"),
        a.assign("w"),
        a.ready,
        a.stop,
        a.metrics,
        a.acks,
        a.control,
    ]
    assert all(k.startswith(f"{PREFIX}:a:") for k in every_a)
    assert len(set(every_a)) == len(every_a)
    assert set(every_a).isdisjoint(
        {
            b.run,
            b.manager,
            b.workers,
            b.worker("w"),
            b.heartbeat("w"),
            b.assign("w"),
            b.ready,
            b.stop,
            b.metrics,
            b.acks,
            b.control,
        }
    )
    assert a.workers not in a.run_scoped()  # Workers that came early survive a new Manager's reset


# -- clocks and shutdown ---------------------------------------------------------------


def test_shift_series_moves_buckets_by_whole_seconds() -> None:
    s = Series()
    s.record(1000.2, "GET /", 5.0, True)
    s.record(1001.7, "GET /", 7.0, False)
    s.set_users(1001.7, 3, "w1")
    assert shift_series(s, 0.3) is s  # under half a second: nothing to move
    moved = shift_series(s, -30.4)
    assert sorted(moved.buckets) == [970, 971]
    assert moved.buckets[970].requests == 1 and moved.buckets[971].failures == 1
    assert moved.buckets[971].users == {"w1": 3}
    back = shift_series(moved, 30.0)
    assert back.to_wire() == s.to_wire()


def test_shift_series_keeps_wide_buckets_aligned() -> None:
    s = Series(interval_s=4)
    s.record(1000.0, "GET /", 5.0, True)  # bucket 1000
    s.record(1004.0, "GET /", 5.0, True)  # bucket 1004
    moved = shift_series(s, 2.0)  # 1002 and 1006 fold into the 4-second grid
    assert all(key % 4 == 0 for key in moved.buckets)
    assert sum(b.requests for b in moved.buckets.values()) == 2


def test_cancel_and_wait_outlasts_a_swallowed_cancellation() -> None:
    """A task that swallows the first cancel (as redis-py can on Python 3.11) still ends."""

    async def stubborn(swallowed: list[int]) -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if not swallowed:
                    swallowed.append(1)
                    continue
                raise

    async def main() -> list[int]:
        swallowed: list[int] = []
        task = asyncio.create_task(stubborn(swallowed))
        await asyncio.sleep(0)
        await asyncio.wait_for(cancel_and_wait(task, patience_s=0.05), 5)
        assert task.done()
        return swallowed

    assert asyncio.run(main()) == [1]


def test_the_key_table_in_the_docs_matches_keys_py() -> None:
    """docs/redis-keys.md documents the schema of goose_redis/gaggle/keys.py row for row."""
    import goose_redis.gaggle.keys as keys_module

    def rows(text: str) -> list[str]:
        return [
            " ".join(line.split())
            for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| key ") and "|-" not in line
        ]

    code_rows = rows(keys_module.__doc__ or "")
    assert len(code_rows) >= 12
    doc = (Path(__file__).resolve().parents[1] / "docs" / "redis-keys.md").read_text()
    doc_rows = rows(doc)
    for row in code_rows:
        assert row in doc_rows, row
    # and every key the code builds is in the table
    names = {row.split("|")[1].strip() for row in code_rows}
    k = Keys("g")
    built = [
        k.run,
        k.manager,
        k.workers,
        k.worker("{id}"),
        k.heartbeat("{id}"),
        k.assign("{id}"),
        k.ready,
        k.shape,
        k.stop,
        k.metrics,
        k.acks,
        k.checkpoint,
        k.control,
        k.commands,
        k.reply("{id}"),
        k.events,
        k.snapshot,
        k.report,
    ]
    assert {key.removeprefix(k.base) for key in built} == names


def test_metrics_entry_data_that_inflates_past_the_bound_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = MetricsEntry("run1", "w1", 1, "steady", False, 1, 0, _sample_metrics()).to_fields()
    assert MetricsEntry.from_fields(fields).metrics.total_requests() == (201, 21)
    monkeypatch.setattr(protocol, "MAX_DATA_BYTES", 1000)
    with pytest.raises(ProtocolError, match="inflates past 1000 bytes"):
        MetricsEntry.from_fields(fields)


def test_sketches_go_with_every_delta_while_small_and_every_fifth_when_big() -> None:
    """Live percentiles stay fresh at low rates; at high rates the sketches (the bulk of a
    delta) wait for every SKETCH_EVERY-th delta, so a Worker's Redis bytes stay flat."""
    from goose_redis.gaggle.keys import SKETCH_BINS_EVERY_DELTA, SKETCH_EVERY
    from goose_redis.gaggle.outbox import sketches_due

    small = Metrics()
    for ms in (1.0, 2.0, 3.0):
        small.request_row("GET", "/a").record(ms, True, 200)
    assert all(sketches_due(small, n) for n in range(1, 2 * SKETCH_EVERY))
    big = Metrics()
    rng = random.Random(3)
    while big.sketch_bins() <= SKETCH_BINS_EVERY_DELTA:
        big.request_row("GET", "/b").record(rng.uniform(0.01, 60_000.0), True, 200)
    due = [n for n in range(1, 3 * SKETCH_EVERY + 1) if sketches_due(big, n)]
    assert due == [SKETCH_EVERY, 2 * SKETCH_EVERY, 3 * SKETCH_EVERY]
    # Held sketches still count: after a cut without them, the next decision sees them.
    big.take(sketches=False)
    assert big.sketch_bins() > SKETCH_BINS_EVERY_DELTA and not sketches_due(big, 1)
