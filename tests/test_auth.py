"""goose_redis/gaggle/auth.py and the signed messages of protocol.py, without Redis: key
derivation against the spec, sign and verify, every byte of a signed message tampered with,
wrong keys and bindings, the replay windows, commands, and the options that carry the secret."""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from support import REPO_ROOT, run_cli

from goose_redis.config import build_config
from goose_redis.errors import InvalidOption
from goose_redis.gaggle.auth import (
    Auth,
    AuthError,
    Binding,
    ReplayGuard,
    Secret,
    SecretCheck,
    canonical,
    gaggle_key,
    run_key,
    sign_command,
    verify_command,
)
from goose_redis.gaggle.protocol import (
    HEARTBEAT_FIELDS,
    Assignment,
    ManagerBeat,
    MetricsEntry,
    ProtocolError,
    Registration,
    ShapeMessage,
    StopRequest,
    Unauthenticated,
    ack_value,
    read_ack,
    read_heartbeat,
    read_run,
    sign_heartbeat,
    sign_run,
)
from goose_redis.metrics import Metrics
from goose_redis.shape import simple

SECRET = b"correct horse battery staple"
OTHER = b"another secret of 16+ bytes"
EXAMPLE = str(REPO_ROOT / "examples" / "drupal_loadtest.py")


def auth(secret: bytes | None = SECRET, gaggle: str = "g") -> Auth:
    return Auth(Secret(secret) if secret else None, gaggle)


def assignment(run_id: str = "run1", host: str = "http://127.0.0.1:8080") -> Assignment:
    return Assignment(run_id, 1, 2, 4, 8, host, 60.0, None, None)


def entry(n: int = 5, run_id: str = "run1", seq: int = 1) -> MetricsEntry:
    m = Metrics()
    for _ in range(n):
        m.request_row("GET", "index").record(10.0, True, 200)
    return MetricsEntry(run_id, "w1", seq, "steady", False, n, 0, m)


# -- keys and the canonical form ----------------------------------------------------------------


def test_keys_are_derived_as_documented() -> None:
    k_gaggle = hmac.new(SECRET, b"goose-redis/v1/gaggle/g", hashlib.sha256).digest()
    assert gaggle_key(SECRET, "g") == k_gaggle
    assert run_key(k_gaggle, "abc") == hmac.new(k_gaggle, b"run/abc", hashlib.sha256).digest()
    body = {"b": 1, "a": [1.5, "x"]}
    want = hmac.new(run_key(k_gaggle, "abc"), canonical("g", Binding("K", "abc", "w"), body), hashlib.sha256)
    assert auth().tag(Binding("K", "abc", "w"), body) == want.hexdigest()
    want_bytes = b'["goose-redis/v1","K","g","abc","w",{"a":[1.5,"x"],"b":1},""]'
    assert canonical("g", Binding("K", "abc", "w"), body) == want_bytes


def test_the_secret_never_shows_in_a_repr() -> None:
    s = Secret(SECRET)
    assert SECRET.decode() not in repr(s) and SECRET.decode() not in str(s)
    assert s == Secret(SECRET) and s != Secret(OTHER)


# -- documents -----------------------------------------------------------------------------------


def test_a_signed_message_verifies_and_any_changed_byte_is_refused() -> None:
    a = auth()
    raw = assignment().to_bytes(a, worker="w1")
    assert b'"mac":"' in raw
    assert Assignment.from_bytes(raw, a, worker="w1") == assignment()
    refused = 0
    for i in range(len(raw)):
        for flip in (0x01, 0x20):
            forged = raw[:i] + bytes([raw[i] ^ flip]) + raw[i + 1 :]
            try:
                Assignment.from_bytes(forged, a, worker="w1")
            except ProtocolError:
                refused += 1
            else:  # only a change that leaves the same document may pass (none does here)
                raise AssertionError(f"byte {i} changed and still accepted: {forged!r}")
    assert refused == 2 * len(raw)


@pytest.mark.parametrize(
    ("secret", "gaggle", "worker"),
    [(OTHER, "g", "w1"), (SECRET, "other-gaggle", "w1"), (SECRET, "g", "w2")],
    ids=["wrong secret", "another gaggle", "another worker"],
)
def test_a_wrong_key_or_binding_is_refused(secret: bytes, gaggle: str, worker: str) -> None:
    raw = assignment().to_bytes(auth(), worker="w1")
    with pytest.raises(Unauthenticated, match="does not match"):
        Assignment.from_bytes(raw, auth(secret, gaggle), worker=worker)


def test_a_message_is_bound_to_its_run_and_kind() -> None:
    a = auth()
    beat = ManagerBeat("run1", 100.0).to_bytes(a)
    doc = orjson.loads(beat)
    doc["run_id"] = "run2"  # the same MAC under another run's key
    with pytest.raises(Unauthenticated):
        ManagerBeat.from_bytes(orjson.dumps(doc), a)
    # A stop request names no run: the reader's run decides the key.
    stop = StopRequest("worker 1", "SIGINT on worker 1", 100.0).to_bytes(a, run_id="run1")
    assert StopRequest.from_bytes(stop, a, run_id="run1").by == "worker 1"
    with pytest.raises(Unauthenticated):
        StopRequest.from_bytes(stop, a, run_id="run2")
    # The same body under another kind's name does not verify.
    doc = orjson.loads(beat)
    with pytest.raises(AuthError):
        a.verify(Binding("Assignment", "run1"), doc)


def test_missing_or_unexpected_mac() -> None:
    plain = assignment().to_bytes()
    assert b"mac" not in plain
    with pytest.raises(Unauthenticated, match="no MAC"):
        Assignment.from_bytes(plain, auth(), worker="w1")
    signed = assignment().to_bytes(auth(), worker="w1")
    with pytest.raises(Unauthenticated, match="this process has no --gaggle-secret"):
        Assignment.from_bytes(signed, auth(None), worker="w1")
    assert Assignment.from_bytes(plain, auth(None), worker="w1") == assignment()
    assert Assignment.from_bytes(signed) == assignment()  # no Auth: nothing checked (status)
    assert assignment().to_bytes(auth(None)) == plain


def test_registration_window_refuses_old_and_future_ones() -> None:
    a = auth()
    raw = Registration("w1", "h", 1, "abc", 1000.0).to_bytes(a, worker="w1")
    assert Registration.from_bytes(raw, a, worker="w1", now=1059.0).id == "w1"
    assert Registration.from_bytes(raw, a, worker="w1", now=941.0).id == "w1"
    with pytest.raises(Unauthenticated, match="outside the 60s replay window"):
        Registration.from_bytes(raw, a, worker="w1", now=1061.0)
    with pytest.raises(Unauthenticated, match="in the future"):
        Registration.from_bytes(raw, a, worker="w1", now=939.0)
    with pytest.raises(Unauthenticated):  # copied under another Worker's field
        Registration.from_bytes(raw, a, worker="w2", now=1000.0)


def test_shape_round_trip_signed() -> None:
    a = auth()
    msg = ShapeMessage.of("run1", 3, 1000.0, simple(8, 0.25, 10.0), ["w1", "w2"])
    assert ShapeMessage.from_bytes(msg.to_bytes(a), a) == msg


def test_metrics_entry_mac_covers_head_and_data() -> None:
    a = auth()
    fields = entry().to_fields(a)
    assert MetricsEntry.from_fields(fields, a).requests == 5
    forged_data = entry(10).to_fields()[b"data"]  # a valid delta, but not the signed one
    with pytest.raises(Unauthenticated):
        MetricsEntry.from_fields({**fields, b"data": forged_data}, a)
    head = orjson.loads(fields[b"head"])
    for change in ({"seq": 2}, {"n": 1_000_000}, {"w": "w2"}, {"final": True}, {"run": "run2"}):
        with pytest.raises(Unauthenticated):
            MetricsEntry.from_fields({**fields, b"head": orjson.dumps({**head, **change})}, a)
    with pytest.raises(Unauthenticated, match="no MAC"):
        MetricsEntry.from_fields(entry().to_fields(), a)


# -- hashes and values ----------------------------------------------------------------------------


def _as_redis(fields: dict[str, Any]) -> dict[bytes, bytes]:
    """What HGETALL returns for an HSET of ``fields`` (redis-py's encoding)."""
    return {k.encode(): (repr(v) if isinstance(v, float) else str(v)).encode() for k, v in fields.items()}


def test_run_hash_signed_fields() -> None:
    a = auth()
    run = {"v": 2, "run_id": "run1", "state": "running", "stop_reason": "", "started_at": 12.5, "users": 8}
    stored = _as_redis(sign_run(a, "run1", run))
    got = read_run(a, stored)
    assert got[b"state"] == b"running" and got[b"started_at"] == b"12.5"
    with pytest.raises(Unauthenticated):
        read_run(a, {**stored, b"state": b"stopping"})
    with pytest.raises(Unauthenticated):
        read_run(a, {k: v for k, v in stored.items() if k != b"mac"})
    # A field someone else added is not returned: only what the MAC covers is.
    assert b"extra" not in read_run(a, {**stored, b"extra": b"1"})
    # A hash that does not sign the state is refused, even with a right MAC.
    partial = _as_redis(sign_run(a, "run1", {"run_id": "run1", "stop_reason": ""}))
    with pytest.raises(Unauthenticated, match="does not sign 'state'"):
        read_run(a, partial)
    assert read_run(auth(None), _as_redis(run)) == _as_redis(run)


def test_heartbeat_and_ack() -> None:
    a = auth()
    fields = sign_heartbeat(a, "w1", {"hb": 100.25, "users": 3, "state": "ready", "requests": 7})
    values = [_as_redis(fields).get(f.encode()) for f in HEARTBEAT_FIELDS]
    assert read_heartbeat(a, "w1", values)["hb"] == b"100.25"
    with pytest.raises(Unauthenticated):
        read_heartbeat(a, "w2", values)
    before = a.refusals.total()
    assert read_heartbeat(a, "w1", [None] * len(HEARTBEAT_FIELDS))["hb"] is None  # no beat yet: no news
    assert a.refusals.total() == before
    assert read_ack(a, "run1", "w1", ack_value(a, "run1", "w1", 42).encode()) == 42
    for bad in (b"99", ack_value(a, "run1", "w2", 99).encode(), ack_value(a, "run2", "w1", 99).encode()):
        with pytest.raises(Unauthenticated):
            read_ack(a, "run1", "w1", bad)
    assert read_ack(auth(None), "run1", "w1", b"7") == 7
    with pytest.raises(ProtocolError):
        read_ack(auth(None), "run1", "w1", b"seven")


def test_refusals_are_logged_once_per_kind_and_counted_per_message(caplog: pytest.LogCaptureFixture) -> None:
    a = auth()
    caplog.set_level(logging.WARNING)
    for n in range(3):
        for _ in range(2):  # the same forgery read twice counts once
            with pytest.raises(Unauthenticated):
                MetricsEntry.from_fields(entry(n + 1).to_fields(), a)
    with pytest.raises(Unauthenticated):
        StopRequest.from_bytes(StopRequest("x", "y", 0).to_bytes(), a, run_id="run1")
    lines = [r.getMessage() for r in caplog.records]
    assert sum("refused an unauthenticated metrics entry" in line for line in lines) == 1, lines
    assert sum("refused an unauthenticated stop request" in line for line in lines) == 1, lines
    assert a.refusals.summary() == [
        "refused 3 unauthenticated metrics entries (logged once)",
        "refused 1 unauthenticated stop request (logged once)",
    ]


def test_secret_check_before_an_assignment() -> None:
    unsigned = SecretCheck(auth(None), "g", grace_s=10)
    assert unsigned.observe(None, 0.0) is None and unsigned.observe(True, 1.0) is None
    assert "is authenticated (its manager signs every message) and this worker has no --gaggle-secret" in str(
        unsigned.observe(False, 2.0))  # fmt: skip
    signed = SecretCheck(auth(), "g", grace_s=10)
    assert signed.observe(False, 0.0) is None and signed.observe(False, 9.0) is None
    assert signed.observe(True, 9.5) is None  # the real Manager's beat between forgeries: start again
    assert signed.observe(False, 10.0) is None and signed.observe(None, 15.0) is None  # no beat: nothing fails
    assert signed.observe(False, 16.0) is None and signed.observe(False, 25.9) is None
    assert "does not sign its messages with this worker's secret" in str(signed.observe(False, 26.0))


# -- commands ----------------------------------------------------------------------------------------


def test_commands_are_signed_fresh_and_applied_once() -> None:
    a, guard = auth(), ReplayGuard(window_s=60)
    raw = sign_command(a, {"command": "users", "value": "10"}, now=1000.0, run_id="run1")
    body = verify_command(a, raw, now=1001.0, guard=guard, run_id="run1")
    assert body["command"] == "users" and body["value"] == "10" and "mac" not in body
    with pytest.raises(AuthError, match="nonce was already used") as replay:
        verify_command(a, raw, now=1002.0, guard=guard, run_id="run1")
    assert replay.value.cause == "replayed"
    late = sign_command(a, {"command": "stop"}, now=1000.0, run_id="run1")
    with pytest.raises(AuthError, match="outside the 60s replay window"):
        verify_command(a, late, now=1061.0, guard=guard, run_id="run1")
    for forged in (
        sign_command(auth(None), {"command": "stop"}, now=1000.0),  # unsigned
        sign_command(auth(OTHER), {"command": "stop"}, now=1000.0, run_id="run1"),  # another secret
        sign_command(a, {"command": "stop"}, now=1000.0, run_id="run0"),  # another run
        raw.replace(b'"10"', b'"99"'),  # altered
    ):
        with pytest.raises(AuthError):
            verify_command(a, forged, now=1000.0, guard=guard, run_id="run1")
    with pytest.raises(ValueError, match="not JSON"):
        verify_command(a, b"{", now=1000.0, guard=guard)
    # Without a secret a command is taken as it comes.
    assert verify_command(auth(None), sign_command(auth(None), {"command": "stop"}, 1.0), 1.0, guard)["command"]


def test_replay_guard_forgets_nonces_after_the_window() -> None:
    guard = ReplayGuard(window_s=10)
    assert guard.admit("n1", 100.0, 100.0) is None
    assert guard.admit("n1", 100.0, 105.0) == "a replay: its nonce was already used"
    assert guard.admit("n2", 120.0, 120.0) is None  # n1 is out of the window: forgotten
    assert "n1" not in guard._seen


# -- the options ---------------------------------------------------------------------------------------


def _raw(**kw: Any) -> dict[str, Any]:
    return {"host": "http://127.0.0.1:8080", "worker": False, "manager": False, **kw}


def test_secret_option_validation(tmp_path: Path) -> None:
    assert build_config(_raw(), []).gaggle_secret is None
    cfg = build_config(_raw(gaggle_secret="x" * 16), [])
    assert cfg.gaggle_secret == Secret(b"x" * 16) and "x" * 16 not in repr(cfg)
    with pytest.raises(InvalidOption) as short:
        build_config(_raw(gaggle_secret="too-short"), [])
    assert "too-short" not in str(short.value) and "at least 16 bytes" in str(short.value)
    path = tmp_path / "secret"
    path.write_text("s" * 20 + "\n")
    assert build_config(_raw(gaggle_secret_file=str(path)), []).gaggle_secret == Secret(b"s" * 20)
    with pytest.raises(InvalidOption, match="not both"):
        build_config(_raw(gaggle_secret="x" * 16, gaggle_secret_file=str(path)), [])
    with pytest.raises(InvalidOption, match="cannot read it"):
        build_config(_raw(gaggle_secret_file=str(tmp_path / "missing")), [])


def test_a_short_secret_is_one_line_and_never_echoed() -> None:
    secret = "only-15-bytes.."
    done = run_cli(["-f", EXAMPLE, "--worker", "--check"], env={"GOOSE_GAGGLE_SECRET": secret}, timeout=60)
    assert done.returncode == 2, done
    assert done.stderr.strip() == (
        'Error: InvalidOption { option: "--gaggle-secret", value: "***", detail: "The gaggle secret must be at '
        'least 16 bytes (it has 15): for example `openssl rand -hex 32`." }'
    )
    assert secret not in done.stdout + done.stderr
