"""The pure parts of control: the snapshot's bound, the command messages, the checks every
sender runs, and what a command does before the start. No processes, no Redis."""

from __future__ import annotations

import orjson
import pytest
from support import run_cli

from goose_redis.arrival import parse_arrival
from goose_redis.commands import Outcome, before_start, check_command, event
from goose_redis.config import build_config
from goose_redis.errors import InvalidOption
from goose_redis.gaggle.protocol import ControlCommand, ControlReply, ProtocolError
from goose_redis.gaggle.steering import steer
from goose_redis.metrics import Metrics
from goose_redis.series import Series
from goose_redis.shape import simple
from goose_redis.snapshot import MAX_EVENTS, MAX_POINTS, MAX_ROWS, MAX_TEXT, MAX_WORKERS, RunView, build_snapshot

T0 = 1_800_000_000.0


def _busy_metrics(rows: int, seconds: int) -> Metrics:
    m = Metrics()
    for i in range(rows):
        row = m.request_row("GET", f"/page/{i:04d}" + ("x" * 5000 if i == 0 else ""))
        for _ in range(i + 1):  # row i has i + 1 requests: the busiest have the highest numbers
            row.record(10.0 + i, True, 200)
    for s in range(seconds):
        m.series.record(T0 + s, "GET /page/0001", 5.0, s % 10 != 0)
        for src in range(3):
            m.series.set_users(T0 + s, 2, f"worker-{src}")
    return m


def _view(**extra: object) -> RunView:
    args: dict[str, object] = {
        "kind": "gaggle", "name": "g", "run_id": "0123456789ab", "state": "running", "now": T0 + 3599.5,
        "started_at": T0, "shape": simple(6, 0.5, 3600.0), "users": 6,
    }  # fmt: skip
    args.update(extra)
    return RunView(**args)  # type: ignore[arg-type]


def test_the_snapshot_stays_small_however_big_the_run() -> None:
    m = _busy_metrics(rows=500, seconds=3600)
    workers = [{"index": i + 1, "id": f"w{i}", "host": "h" * 1000, "state": "running", "alive": True, "users": 1,
                "requests": 5, "failures": 0, "rps": 1.0} for i in range(300)]  # fmt: skip
    events = [event("users", str(i), "control on h", T0 + i, T0) for i in range(200)]
    snap = build_snapshot(_view(workers=workers, events=events), m, m.series)

    assert len(snap["requests"]) == MAX_ROWS and snap["rows_omitted"] == 400
    kept = {r["name"] for r in snap["requests"]}
    assert kept == {f"/page/{i:04d}" for i in range(400, 500)}  # the busiest rows, in name order
    assert [r["name"] for r in snap["requests"]] == sorted(kept)
    assert len(snap["points"]) == MAX_POINTS
    assert len(snap["workers"]) == MAX_WORKERS and snap["workers_omitted"] == 100
    assert all(len(w["host"]) <= MAX_TEXT for w in snap["workers"])
    assert len(snap["events"]) == MAX_EVENTS and snap["events_omitted"] == 150
    assert snap["events"][-1]["value"] == "199"  # the newest
    assert snap["aggregated"]["count"] == sum(range(1, 501))  # the totals count every row
    assert len(orjson.dumps(snap)) < 120_000


def test_the_snapshot_figures() -> None:
    m = Metrics()
    for s in range(20):  # 10 requests a second, one failed in every 10
        for k in range(10):
            m.request_row("GET", "/").record(float(k + 1), k != 0, 200)
            m.series.record(T0 + s + k / 10, "GET /", float(k + 1), k != 0)
        m.series.set_users(T0 + s, 4, "")
    snap = build_snapshot(_view(now=T0 + 20.2, lag_s=0.0, users=4), m, m.series)
    assert snap["totals"]["requests"] == 200 and snap["totals"]["failures"] == 20
    assert snap["totals"]["rps"] == 10.0 and snap["totals"]["fail_ps"] == 1.0
    assert snap["requests"][0]["rps"] == 10.0
    assert snap["points"][-1] == {"t": 19.0, "users": 4, "rps": 10.0, "fail_ps": 1.0, "p95_ms": pytest.approx(9, abs=1)}
    # A gaggle's newest seconds are still arriving: they are left out of the rates and the charts.
    lagging = build_snapshot(_view(now=T0 + 20.2, lag_s=3.0, users=4), m, m.series)
    assert lagging["points"][-1]["t"] == 16.0 and lagging["totals"]["rps"] == 10.0
    # Once the run is over, rates are over the measured period.
    final = build_snapshot(_view(state="done", final_duration_s=40.0), m, m.series)
    assert final["totals"]["rps"] == 5.0 and final["requests"][0]["rps"] == 5.0


def test_control_messages_are_checked() -> None:
    cmd = ControlCommand("0123456789abcdef", "users", "6", "control on h", T0)
    assert ControlCommand.from_bytes(cmd.to_bytes()) == cmd
    for bad in (
        {"id": "xyz"}, {"id": "0" * 65}, {"command": "pause"}, {"value": "9" * 1001}, {"by": ""}, {"at": "now"},
        {"v": 1},
    ):  # fmt: skip
        doc = {**orjson.loads(cmd.to_bytes()), **bad}
        with pytest.raises(ProtocolError):
            ControlCommand.from_bytes(orjson.dumps(doc))
    reply = ControlReply("0123456789abcdef", False, "the run is already over", "refused", T0)
    assert ControlReply.from_bytes(reply.to_bytes()) == reply
    with pytest.raises(ProtocolError):
        ControlReply.from_bytes(ControlReply("0123456789abcdef", True, "x", "refused", T0).to_bytes())


def test_outcomes_map_to_exit_codes() -> None:
    assert Outcome(True, "x").exit_code == 0
    assert Outcome(False, "x", "refused").exit_code == 1
    assert Outcome(False, "x", "invalid").exit_code == 2


@pytest.mark.parametrize(
    ("command", "value", "expected"),
    [("users", " 6 ", "6"), ("hatch-rate", "0.5", "0.5"), ("run-time", "1m30s", "1m30s"), ("throttle", "100", "100"),
     ("test-plan", "4,10s;0,0s", "4,10s;0,0s"), ("start", None, None), ("stop", "", None)],
)  # fmt: skip
def test_check_command_passes_good_values(command: str, value: str | None, expected: str | None) -> None:
    assert check_command(command, value) == expected


def test_a_ramp_of_years_is_refused_not_sent_to_workers() -> None:
    """A million users at 0.001/s would start over 30 years: Workers could not follow that shape."""
    slow = _config("-u", "2", "-r", "0.001")
    with pytest.raises(InvalidOption, match="out of bounds"):
        before_start(slow, "users", "1000000")  # type: ignore[arg-type]
    with pytest.raises(InvalidOption, match="out of bounds"):
        steer(slow.shape(), 10.0, "users", "1000000")  # type: ignore[attr-defined]


def _config(*args: str) -> object:
    raw: dict[str, object] = {"host": "http://127.0.0.1:9"}
    it = iter(args)
    names = {"-u": "users", "-r": "hatch_rate", "-t": "run_time", "--test-plan": "test_plan",
             "--arrival-rate": "arrival_rate"}  # fmt: skip
    for flag in it:
        raw[names[flag]] = next(it)
    return build_config(raw, [None])


def test_before_the_start_a_command_changes_what_starts() -> None:
    config = _config("-u", "2", "-r", "2", "-t", "30s")
    changed, said = before_start(config, "users", "6")  # type: ignore[arg-type]
    assert said == "users -> 6 from the start"
    assert changed.shape() == _config("-u", "6", "-r", "2", "-t", "30s").shape()  # type: ignore[attr-defined]
    changed, said = before_start(changed, "run-time", "10s")
    assert said == "run time -> 10s after the users are launched"
    assert changed.shape().end_s == 2.5 + 10
    changed, _ = before_start(changed, "test-plan", "4,2s;0,0s")
    assert changed.shape().end_s == 2.0 and changed.test_plan_text == "4,2s;0,0s"
    with pytest.raises(ValueError, match="a test plan sets its own end"):
        before_start(changed, "run-time", "10s")
    open_model = _config("-u", "4", "--arrival-rate", "5", "-t", "10s")
    assert open_model.arrival == parse_arrival("--arrival-rate", "5", 10.0)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="launches its users at once"):
        before_start(open_model, "hatch-rate", "2")  # type: ignore[arg-type]


def test_series_window_ignores_the_time_before_the_run() -> None:
    s = Series()
    s.record(T0, "GET /", 1.0, True)
    m = Metrics(series=s)
    m.request_row("GET", "/").record(1.0, True)
    snap = build_snapshot(_view(now=T0 + 1.5, lag_s=0.0), m, s)
    assert snap["totals"]["rps"] == 1.0  # one complete second, not averaged over five


@pytest.mark.parametrize(
    ("args", "option", "detail"),
    [
        (["--worker", "--no-autostart"], "--no-autostart", "set on the Manager"),
        (["--host", "http://127.0.0.1:9", "--no-autostart"], "--no-autostart", "needs --controller-port"),
        (["--manager", "--expect-workers", "1", "--host", "http://127.0.0.1:9", "--controller-port", "8089"],
         "--controller-port", "goose-redis dashboard"),
        (["--host", "http://127.0.0.1:9", "--controller-bind", "0.0.0.0"], "--controller-bind",
         "needs --controller-port"),
        (["--host", "http://127.0.0.1:9", "--controller-port", "70000"], "--controller-port", "at most 65535"),
    ],
)  # fmt: skip
def test_controller_option_errors(args: list[str], option: str, detail: str, tmp_path: object) -> None:
    from test_gaggle import write_load_test

    path = write_load_test(tmp_path)  # type: ignore[arg-type]
    result = run_cli(["-f", str(path), *args], timeout=60)
    assert result.returncode == 2, result
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f'Error: InvalidOption {{ option: "{option}"') and detail in line, line
