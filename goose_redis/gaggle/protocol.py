"""Versioned messages of the gaggle, as orjson documents.

Everything read from Redis goes through ``decode``: it is parsed as JSON (never
unpickled or evaluated), its protocol version checked, and every field
type-checked, so garbage under the gaggle's keys becomes a ``ProtocolError``
that the reader logs and skips.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from typing import Any, TypeVar, get_type_hints

import orjson

from ..metrics import Metrics, WireError

# 2: metrics data is zlib-compressed JSON, sketches carry only occupied bins, rows count bytes.
PROTOCOL_VERSION = 2
# A metrics entry's data, decompressed, may not exceed this (a bounded series of a few
# thousand buckets and rows fits many times over); more is refused, not inflated.
MAX_DATA_BYTES = 32 * 1024 * 1024


class ProtocolError(ValueError):
    """Something under the gaggle's keys that is not a message we understand."""


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

    def to_bytes(self) -> bytes:
        return orjson.dumps({"v": PROTOCOL_VERSION, **dataclasses.asdict(self)})  # type: ignore[call-overload]

    @classmethod
    def from_bytes(cls: type[T], raw: object) -> T:
        doc = decode(raw, cls.__name__)
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
        return cls(**values)


def as_text(raw: object) -> str:
    """A Redis reply as text (replies are bytes; tests may hand us str)."""
    if isinstance(raw, bytes):
        return raw.decode(errors="replace")
    return "" if raw is None else str(raw)


def decode(raw: object, what: str = "message") -> dict[str, Any]:
    if raw is None:
        raise ProtocolError(f"{what} is missing")
    try:
        doc = orjson.loads(raw)  # type: ignore[arg-type]
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise ProtocolError(f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    version = doc.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:  # true == 1 and 1.0 == 1 in Python
        raise ProtocolError(f"{what} has protocol version {doc.get('v')!r}, expected {PROTOCOL_VERSION}")
    return doc


@dataclass(frozen=True)
class Registration(Message):
    id: str
    host: str
    pid: int
    hash: str
    at: float


@dataclass(frozen=True)
class Assignment(Message):
    """A Worker's share: counts and schedule only, never user objects (Goose's
    Manager hung serialising those)."""

    run_id: str
    index: int  # 1-based worker number in the gaggle
    workers: int
    users: int  # users this worker launches
    total_users: int
    interval_s: float  # gaggle-wide seconds between two launches
    host: str | None
    timeout_s: float
    iterations: int | None
    reset_metrics: bool
    scenarios: str | None
    refuse: str | None = None  # set: the worker must exit, with this reason
    clean: bool = True  # a refusal that is not an error (gaggle full)


@dataclass(frozen=True)
class StopRequest(Message):
    by: str  # "manager" or "worker N"
    reason: str
    at: float


@dataclass(frozen=True)
class ManagerBeat(Message):
    run_id: str
    at: float


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

    def to_fields(self) -> dict[bytes, bytes]:
        head = {
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
        return {b"head": orjson.dumps(head), b"data": zlib.compress(orjson.dumps(self.metrics.to_wire()), 6)}

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> MetricsEntry:
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
        try:
            metrics = Metrics.from_wire(orjson.loads(inflate(fields.get(b"data"))))
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
