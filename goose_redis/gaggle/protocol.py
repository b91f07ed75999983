"""Versioned messages of the gaggle, as orjson documents.

Everything read from Redis goes through ``decode``: it is parsed as JSON (never
unpickled or evaluated), its protocol version checked, and every field
type-checked, so garbage under the gaggle's keys becomes a ``ProtocolError``
that the reader logs and skips.

Encoders and decoders take an optional ``Auth`` (``auth.py``) and the binding context
the message does not carry itself (``run_id=``, ``worker=``): with a secret they sign
and verify; a message that fails is an ``Unauthenticated`` (a ``ProtocolError``),
already counted and logged once per kind, which the reader skips quietly.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, get_type_hints

import orjson

from ..arrival import ArrivalPlan, RateSegment
from ..metrics import Metrics, WireError
from ..shape import MAX_PLAN_S, MAX_PLAN_USERS, Segment, Shape
from .auth import MAC, SIGNED, Auth, AuthError, Binding, digest

# 2: metrics data is zlib-compressed JSON, sketches carry only occupied bins, rows count bytes.
PROTOCOL_VERSION = 2
# A metrics entry's data, decompressed, may not exceed this (a bounded series of a few
# thousand buckets and rows fits many times over); more is refused, not inflated.
MAX_DATA_BYTES = 32 * 1024 * 1024
MAX_WORKERS = 100_000
MAX_SEGMENTS = 10_000


class ProtocolError(ValueError):
    """Something under the gaggle's keys that is not a message we understand."""


class Unauthenticated(ProtocolError):
    """Refused by ``Auth``: no MAC, a wrong one, one where none belongs, or out of its
    window. Already counted (and the first of its kind logged): skip it quietly."""


T = TypeVar("T")


def _check(value: Any, hint: Any) -> bool:
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool, dict, list):
        return isinstance(value, hint)
    args = getattr(hint, "__args__", None)
    if args:  # X | None
        return any(a is type(None) and value is None or a is not type(None) and _check(value, a) for a in args)
    return True


class Message:
    """Base of the dataclass messages: ``to_bytes`` / ``from_bytes``."""

    # Versions a reader accepts: a message whose shape did not change may be older.
    VERSIONS: ClassVar[tuple[int, ...]] = (PROTOCOL_VERSION,)
    # Signing: the field naming the run whose key signs it (None: the caller's ``run_id=``,
    # "" being the gaggle key); a dated field refused outside auth.WINDOW_S (given ``now=``);
    # the field whose value counts a refusal once (None: each distinct document).
    RUN_FIELD: ClassVar[str | None] = "run_id"
    DATE_FIELD: ClassVar[str | None] = None
    IDENTITY_FIELD: ClassVar[str | None] = None

    @classmethod
    def binding(cls, doc: Mapping[str, Any], run_id: str = "", worker: str = "") -> Binding:
        run = doc.get(cls.RUN_FIELD) if cls.RUN_FIELD else run_id
        if not isinstance(run, str):
            raise ProtocolError(f"{cls.__name__}.{cls.RUN_FIELD} has the wrong type")
        return Binding(cls.__name__, run, worker)

    def to_bytes(self, auth: Auth | None = None, *, run_id: str = "", worker: str = "") -> bytes:
        """The document; with ``auth``, signed under the binding (see ``binding``)."""
        doc = {"v": PROTOCOL_VERSION, **dataclasses.asdict(self)}  # type: ignore[call-overload]
        if auth is not None:
            doc = auth.sign(self.binding(doc, run_id, worker), doc)
        return orjson.dumps(doc)

    @classmethod
    def from_bytes(cls: type[T], raw: object, auth: Auth | None = None, *, run_id: str = "", worker: str = "",
                   now: float | None = None) -> T:  # fmt: skip
        """Parse and check a document; with ``auth``, verify its MAC (and its date, given ``now``)
        first. Raises ProtocolError (Unauthenticated when the MAC or the date is refused)."""
        doc = decode(raw, cls.__name__, cls.VERSIONS)  # type: ignore[attr-defined]
        if auth is not None:
            doc = cls._verified(doc, raw, auth, run_id, worker, now)  # type: ignore[attr-defined]
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in doc:
                if f.default is not dataclasses.MISSING:
                    continue
                raise ProtocolError(f"{cls.__name__} lacks {f.name!r}")
            if not _check(doc[f.name], hints[f.name]):
                raise ProtocolError(f"{cls.__name__}.{f.name} has the wrong type")
            values[f.name] = doc[f.name]
        msg = cls(**values)
        problem = msg.check()  # type: ignore[attr-defined]
        if problem:
            raise ProtocolError(f"{cls.__name__}: {problem}")
        return msg

    def check(self) -> str | None:
        """Ranges, not only types: a reason when a well-typed message still makes no sense."""
        return None

    @classmethod
    def _verified(cls, doc: dict[str, Any], raw: object, auth: Auth, run_id: str, worker: str,
                  now: float | None) -> dict[str, Any]:  # fmt: skip
        binding = cls.binding(doc, run_id, worker)
        identity = (binding, doc.get(cls.IDENTITY_FIELD)) if cls.IDENTITY_FIELD else raw
        try:
            doc = auth.verify(binding, doc, identity=identity)
            if now is not None and cls.DATE_FIELD is not None:
                auth.check_window(binding, doc.get(cls.DATE_FIELD), now, identity)
        except AuthError as exc:
            raise Unauthenticated(f"{cls.__name__}: {exc.reason}") from None
        return doc


def as_text(raw: object) -> str:
    """A Redis reply as text (replies are bytes; tests may hand us str)."""
    if isinstance(raw, bytes):
        return raw.decode(errors="replace")
    return "" if raw is None else str(raw)


def decode(raw: object, what: str = "message", versions: tuple[int, ...] = (PROTOCOL_VERSION,)) -> dict[str, Any]:
    if raw is None:
        raise ProtocolError(f"{what} is missing")
    try:
        doc = orjson.loads(raw)  # type: ignore[arg-type]
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise ProtocolError(f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    version = doc.get("v")
    if type(version) is not int or version not in versions:  # true == 1 and 1.0 == 1 in Python
        raise ProtocolError(f"{what} has protocol version {doc.get('v')!r}, expected {PROTOCOL_VERSION}")
    return doc


@dataclass(frozen=True)
class Registration(Message):
    """Signed with the gaggle key (no run yet), bound to the ``workers`` field it is under."""

    id: str
    host: str
    pid: int
    hash: str
    at: float
    run_id: str | None = None  # set once assigned: a later run's Manager must not take it in

    RUN_FIELD: ClassVar[str | None] = None
    DATE_FIELD: ClassVar[str | None] = "at"
    IDENTITY_FIELD: ClassVar[str | None] = "id"


@dataclass(frozen=True)
class Assignment(Message):
    """What a Worker needs besides the shape: never user objects (Goose's Manager hung
    serialising those). Which users it runs, and when, follows from the shape."""

    run_id: str
    index: int  # 1-based worker number in the gaggle
    workers: int  # the gaggle's expected Workers
    users: int  # this Worker's users at the initial shape's peak (for the logs)
    total_users: int  # the gaggle's users at that peak
    host: str | None
    timeout_s: float
    iterations: int | None
    scenarios: str | None
    co_mitigation: str = "disabled"
    refuse: str | None = None  # set: the worker must exit, with this reason
    clean: bool = True  # a refusal that is not an error (gaggle full)

    def check(self) -> str | None:
        if self.refuse is not None:
            return None
        if not 1 <= self.index <= self.workers <= MAX_WORKERS:
            return "index and workers must satisfy 1 <= index <= workers"
        if not 0 <= self.users <= MAX_PLAN_USERS:
            return "users out of range"
        if not 0 < self.timeout_s <= MAX_PLAN_S:
            return "timeout out of range"
        if self.iterations is not None and self.iterations < 1:
            return "iterations must be at least 1"
        if self.co_mitigation not in ("disabled", "average", "minimum", "maximum"):
            return "unknown co_mitigation"
        return None


def _segments(rows: list[Any], what: str, integer: bool) -> list[tuple[float, float, float, float, bool]]:
    if len(rows) > MAX_SEGMENTS:
        raise ProtocolError(f"too many {what} segments")
    width = 5 if integer else 4
    out = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == width and all(_check(x, float) for x in row)):
            raise ProtocolError(f"a {what} segment is not {width} numbers")
        at, start, end, over = (float(x) for x in row[:4])
        at_once = bool(row[4]) if integer else False
        if integer and row[4] not in (0, 1):
            raise ProtocolError(f"a {what} segment's last field is not 0 or 1")
        limit = MAX_PLAN_USERS if integer else 1_000_000.0
        if not (0 <= at <= 2 * MAX_PLAN_S and 0 <= start <= limit and 0 <= end <= limit):
            raise ProtocolError(f"a {what} segment is out of range")
        if not (0 <= over <= 2 * MAX_PLAN_S or (over == -1 and not integer)):
            raise ProtocolError(f"a {what} segment has an invalid length")
        if integer and (start != int(start) or end != int(end)):
            raise ProtocolError(f"a {what} segment has a fractional user count")
        out.append((at, start, end, over, at_once))
    return out


@dataclass(frozen=True)
class ShapeMessage(Message):
    """The gaggle's load shape: users over run time, who holds which slot, the throttle and the
    arrival rate. Times are seconds after ``started_at`` (the gaggle clock), so a Worker that
    reads it late, or again after a reconnect, lands on the current step. ``epoch`` grows with
    every change."""

    run_id: str
    epoch: int
    started_at: float | None
    segments: list  # [[at, start, end, over, at_once (0/1)], ...]
    end_s: float | None
    reset_s: float | None
    hatch_rate: float
    throttle: float | None
    arrival: list | None  # [[at, start rate, end rate, over (-1: open-ended)]]
    workers: list  # Worker ids in slot order
    arrival_text: str = ""  # the --arrival-rate text, for reports
    cause: str = ""  # why it last changed ("users -> 6 at 2/s (by control on host)"), for Workers' logs

    def check(self) -> str | None:
        try:
            _segments(self.segments, "user", True)
            if self.arrival is not None:
                _segments(self.arrival, "rate", False)
        except ProtocolError as exc:
            return str(exc)
        if self.epoch < 0 or not 0 < self.hatch_rate <= 1e9:
            return "epoch or hatch rate out of range"
        if self.throttle is not None and not 0 < self.throttle <= 1e9:
            return "throttle out of range"
        if len(self.workers) > MAX_WORKERS or not all(isinstance(w, str) and w for w in self.workers):
            return "workers must be a list of ids"
        if len(set(self.workers)) != len(self.workers):
            return "a worker holds two slots"
        if len(self.cause) > 2000:
            return "cause too long"
        for value in (self.end_s, self.reset_s):
            if value is not None and not 0 <= value <= 2 * MAX_PLAN_S:
                return "end or reset time out of range"
        return None

    @classmethod
    def of(cls, run_id: str, epoch: int, started_at: float | None, shape: Shape, workers: list[str],
           cause: str = "") -> ShapeMessage:  # fmt: skip
        arrival = None
        if shape.arrival is not None:
            arrival = [[r.at, r.start, r.end, -1 if r.over == float("inf") else r.over] for r in shape.arrival.segments]
        return cls(
            run_id, epoch, started_at,
            [[s.at, s.start, s.end, s.over, int(s.at_once)] for s in shape.segments],
            shape.end_s, shape.reset_s, shape.hatch_rate, shape.throttle, arrival, list(workers),
            shape.arrival.text if shape.arrival is not None else "", cause,
        )  # fmt: skip

    def shape(self) -> Shape:
        arrival = None
        if self.arrival is not None:
            rates = _segments(self.arrival, "rate", False)
            segs = tuple(RateSegment(a, s, e, float("inf") if o == -1 else o) for a, s, e, o, _ in rates)
            arrival = ArrivalPlan(segs, self.arrival_text)
        segments = tuple(Segment(a, int(s), int(e), o, f) for a, s, e, o, f in _segments(self.segments, "user", True))
        return Shape(segments, self.end_s, self.reset_s, self.hatch_rate, self.throttle, arrival)


@dataclass(frozen=True)
class StopRequest(Message):
    by: str  # "manager", "worker N", or whoever wrote it with redis-cli
    reason: str
    at: float

    VERSIONS: ClassVar[tuple[int, ...]] = (1, PROTOCOL_VERSION)  # unchanged since 1: redis-cli recipes keep working
    RUN_FIELD: ClassVar[str | None] = None  # signed with the key of the reader's run (run_id=)
    DATE_FIELD: ClassVar[str | None] = "at"

    def describe(self) -> str:
        """The stop reason as logs show it: who asked, unless the reason already says."""
        return self.reason if self.by in self.reason else f"{self.reason} (asked by {self.by})"

    def check(self) -> str | None:
        return None if len(self.reason) <= 1000 and len(self.by) <= 200 else "too long"


@dataclass(frozen=True)
class ManagerBeat(Message):
    run_id: str
    at: float
    owner: str = ""  # this Manager process: a restarted Manager adopts the run id, not the owner

    IDENTITY_FIELD: ClassVar[str | None] = "run_id"


ENTRY = "MetricsEntry"


@dataclass(frozen=True)
class MetricsEntry:
    """One stream entry: a Worker's delta since its previous entry.

    ``seq`` counts from 1 per worker and run, so the Manager merges each
    (worker, seq) once however often it reads or a Worker re-sends it.
    ``requests``/``failures`` are the Worker's running totals, to check the merge.
    """

    run_id: str
    worker_id: str
    seq: int
    phase: str  # "ramp" (before the reset) or "steady"
    final: bool
    requests: int
    failures: int
    metrics: Metrics

    def to_fields(self, auth: Auth | None = None) -> dict[bytes, bytes]:
        """The stream entry; with ``auth`` the head's MAC covers the head and a digest of the data."""
        head: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "run": self.run_id,
            "w": self.worker_id,
            "seq": self.seq,
            "phase": self.phase,
            "final": self.final,
            "n": self.requests,
            "f": self.failures,
        }
        # Compressed: counts, floats and sketch bins repeat their shapes across rows and buckets.
        # The MAC covers the bytes on the wire, so nothing unauthenticated is ever inflated.
        data = zlib.compress(orjson.dumps(self.metrics.to_wire()), 6)
        if auth is not None:
            head = auth.sign(Binding(ENTRY, self.run_id, self.worker_id), head, digest(data))
        return {b"head": orjson.dumps(head), b"data": data}

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes], auth: Auth | None = None) -> MetricsEntry:
        """Parse an entry; with ``auth`` its MAC is checked before the data is parsed at all."""
        head = decode(fields.get(b"head"), "metrics entry")
        try:
            run_id, worker_id, seq = head["run"], head["w"], head["seq"]
            phase, final, n, f = head["phase"], head["final"], head["n"], head["f"]
        except KeyError as exc:
            raise ProtocolError(f"metrics entry lacks {exc}") from None
        if not (isinstance(run_id, str) and isinstance(worker_id, str) and isinstance(seq, int) and seq > 0):
            raise ProtocolError("metrics entry ids have the wrong types")
        if phase not in ("ramp", "steady") or not isinstance(final, bool):
            raise ProtocolError("metrics entry phase/final are invalid")
        if not (isinstance(n, int) and isinstance(f, int)):
            raise ProtocolError("metrics entry totals are not integers")
        data = fields.get(b"data", b"")
        if auth is not None:
            mark = digest(data if isinstance(data, bytes) else b"")
            try:
                auth.verify(Binding(ENTRY, run_id, worker_id), head, mark, identity=(fields.get(b"head"), mark))
            except AuthError as exc:
                raise Unauthenticated(f"metrics entry: {exc.reason}") from None
        try:
            metrics = Metrics.from_wire(orjson.loads(inflate(data)))
        except (orjson.JSONDecodeError, WireError) as exc:
            raise ProtocolError(f"metrics entry data is invalid: {exc}") from None
        return cls(run_id, worker_id, seq, phase, final, n, f, metrics)


def inflate(raw: object) -> bytes:
    """Decompress a metrics entry's data, refusing more than MAX_DATA_BYTES (a zip bomb)."""
    if not isinstance(raw, bytes):
        raise ProtocolError("metrics entry data is missing or not bytes")
    d = zlib.decompressobj()
    try:
        out = d.decompress(raw, MAX_DATA_BYTES)
    except zlib.error as exc:
        raise ProtocolError(f"metrics entry data is not zlib data: {exc}") from None
    if d.unconsumed_tail:
        raise ProtocolError(f"metrics entry data inflates past {MAX_DATA_BYTES} bytes")
    if not d.eof:
        raise ProtocolError("metrics entry data is truncated")
    return out


# -- control commands (``goose-redis control``, the dashboard) -----------------------------------

CONTROL_COMMANDS = ("users", "hatch-rate", "run-time", "throttle", "test-plan", "start", "stop")
MAX_COMMAND_VALUE = 1000


def _is_nonce(text: str) -> bool:
    return 8 <= len(text) <= 64 and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True)
class ControlCommand(Message):
    """A command for the Manager, added to the ``commands`` stream by anyone who reaches Redis.

    ``id`` is a random nonce: the Manager answers in ``reply:{id}``. With the gaggle's secret
    the document carries a MAC (``control_auth``): a gaggle with a secret refuses a command
    without a valid one. ``at`` is the gaggle clock when it was sent; a command older than
    ``COMMAND_MAX_AGE_S`` when the Manager reads it is refused, not applied late."""

    id: str
    command: str
    value: str | None
    by: str  # "control on HOST", "dashboard on HOST"
    at: float

    # Signed with the gaggle key (RUN_FIELD None, the caller passes run_id=""), dated by "at",
    # a refusal counted once per command id.
    RUN_FIELD: ClassVar[str | None] = None
    DATE_FIELD: ClassVar[str | None] = "at"
    IDENTITY_FIELD: ClassVar[str | None] = "id"

    def check(self) -> str | None:
        if not _is_nonce(self.id):
            return "id is not 8 to 64 hex digits"
        if self.command not in CONTROL_COMMANDS:
            return f"unknown command {self.command[:40]!r}"
        if self.value is not None and len(self.value) > MAX_COMMAND_VALUE:
            return "value too long"
        if not 0 < len(self.by) <= 200:
            return "by is empty or too long"
        return None


@dataclass(frozen=True)
class ControlReply(Message):
    """The Manager's answer in ``reply:{id}``: ``ok`` and what it did, or why not.

    ``error`` is ``"refused"`` (the gaggle cannot do it now: exit 1) or ``"invalid"`` (the
    value makes no sense: exit 2); ``said`` is the one line a user reads either way."""

    id: str
    ok: bool
    said: str
    error: str | None
    at: float

    def check(self) -> str | None:
        if self.error not in (None, "refused", "invalid") or (self.ok and self.error is not None):
            return "error must be null, refused or invalid"
        return None if len(self.said) <= 2000 else "said too long"


# -- hashes and single values: the run state, a Worker's heartbeat, acknowledgements ------------

RUN_SIGNED = ("run_id", "state", "stop_reason")  # what Workers act on; the Manager signs every field it writes
HEARTBEAT_SIGNED = ("hb", "users", "state")  # what the Manager acts on
HEARTBEAT_FIELDS = (*HEARTBEAT_SIGNED, SIGNED, MAC)  # what it reads (HMGET), in this order


def _text(raw: object) -> str:
    return as_text(raw)


def sign_run(auth: Auth | None, run_id: str, fields: Mapping[str, Any]) -> dict[Any, Any]:
    """The ``run`` hash fields to HSET: with a secret, plus ``signed`` and ``mac`` (run key)."""
    return auth.sign_fields(Binding("run", run_id), fields) if auth is not None else dict(fields)


def read_run(auth: Auth | None, raw: Mapping[Any, Any], run_id: str | None = None) -> Mapping[Any, Any]:
    """The ``run`` hash as read (HGETALL): with ``auth``, only the fields its MAC covers, under
    the key of ``run_id`` (the run the reader follows: another run's state is refused), or of
    the run it names when None (the caller then compares that with the run it knows)."""
    if auth is None:
        return raw
    if run_id is None:
        run_id = _text(raw.get(b"run_id", raw.get("run_id")))
    try:
        return auth.verify_fields(Binding("run", run_id), raw, RUN_SIGNED)
    except AuthError as exc:
        raise Unauthenticated(f"run state: {exc.reason}") from None


def sign_heartbeat(auth: Auth | None, worker_id: str, fields: Mapping[str, Any]) -> dict[Any, Any]:
    """A Worker's ``worker:{id}`` fields: with a secret ``hb``, ``users`` and ``state`` signed
    with the gaggle key (a Worker beats before it knows the run), bound to its id."""
    if auth is None or not auth.enabled:
        return dict(fields)
    signed = auth.sign_fields(Binding("heartbeat", "", worker_id), {k: fields[k] for k in HEARTBEAT_SIGNED})
    return {**fields, **signed}


def read_heartbeat(auth: Auth | None, worker_id: str, values: list[Any]) -> dict[str, Any]:
    """``HMGET worker:{id} *HEARTBEAT_FIELDS`` as {field: value}, verified with ``auth``."""
    got = dict(zip(HEARTBEAT_FIELDS, values, strict=False))
    if auth is None or all(v is None for v in values):
        return got  # no hash yet (a Worker before its first beat): no news, nothing to refuse
    try:
        return {_text(k): v for k, v in auth.verify_fields(Binding("heartbeat", "", worker_id), got,
                                                           HEARTBEAT_SIGNED).items()}  # fmt: skip
    except AuthError as exc:
        raise Unauthenticated(f"worker heartbeat: {exc.reason}") from None


def ack_value(auth: Auth | None, run_id: str, worker_id: str, watermark: int) -> str:
    """An ``acks`` value: the watermark, and with a secret ``:mac`` bound to run and Worker."""
    value = str(watermark)
    return auth.sign_value(Binding("ack", run_id, worker_id), value) if auth is not None else value


def read_ack(auth: Auth | None, run_id: str, worker_id: str, raw: object) -> int:
    """The watermark of an ``acks`` value; ProtocolError (Unauthenticated) when refused."""
    text = _text(raw)
    if auth is not None:
        try:
            text = auth.open_value(Binding("ack", run_id, worker_id), text)
        except AuthError as exc:
            raise Unauthenticated(f"acknowledgement: {exc.reason}") from None
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise ProtocolError(f"acknowledgement {text[:40]!r} is not a sequence number")
    return int(text)
