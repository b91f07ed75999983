"""Who may steer a gaggle: every message authenticated with HMAC-SHA256 (pure, no I/O).

Anyone who can write ``goose:{gaggle}:*`` could otherwise point Workers at another host,
add forged deltas or stop the run. With ``--gaggle-secret`` every message carries a MAC
under a key derived from the secret, bound to what the message is (its kind), where it
belongs (gaggle, run, worker) and its own body, which holds its sequence, epoch or time:

    K_gaggle = HMAC-SHA256(secret, "goose-redis/v1/gaggle/" + gaggle)
    K_run    = HMAC-SHA256(K_gaggle, "run/" + run_id)
    mac      = HMAC-SHA256(K_run or K_gaggle, canonical(kind, gaggle, run, worker, body, extra))

``canonical`` is one JSON array with sorted keys: a reader re-encodes what it parsed, so
what it checks is exactly what it uses. MACs are compared with ``hmac.compare_digest``.
Messages sent before a run id exists (registrations, Worker heartbeats) use K_gaggle;
everything else the key of the run it names. Freshness (``at`` within ``WINDOW_S``),
epochs and command nonces refuse replays.

Without a secret an ``Auth`` signs nothing and refuses only what *is* signed (a Worker
without the secret in a gaggle with one, or the reverse, is told so instead of hanging).
Each kind of refusal is logged once and counted (``Refusals``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

DOMAIN = "goose-redis/v1"
MAC = "mac"  # the field that carries a MAC
SIGNED = "signed"  # in a hash: the names of the fields the MAC covers
MIN_SECRET_BYTES = 16
MAX_SECRET_BYTES = 4096
WINDOW_S = 60.0  # how old (or how far ahead) a dated message may be
_MAX_RUN_KEYS = 64  # derived keys kept; run ids read from Redis are anyone's choice
_MAX_SEEN = 100_000  # refusals remembered per kind (to count each once)

log = logging.getLogger("goose_redis.gaggle.auth")

# Log nouns for message kinds (the names protocol.py binds with).
NOUNS = {
    "Registration": "registration",
    "Assignment": "assignment",
    "ShapeMessage": "shape",
    "StopRequest": "stop request",
    "ManagerBeat": "manager heartbeat",
    "MetricsEntry": "metrics entry",
    "run": "run state",
    "heartbeat": "worker heartbeat",
    "ack": "acknowledgement",
    "command": "command",
}

# What a refusal says about the message, by cause.
UNAUTHENTICATED, SIGNED_UNEXPECTEDLY, STALE, REPLAYED = "unauthenticated", "signed", "stale", "replayed"
NO_MAC = "it carries no MAC: written by a process without --gaggle-secret, or by someone else"
BAD_MAC = "its MAC does not match: signed with another --gaggle-secret, altered, or copied from elsewhere"
UNEXPECTED_MAC = (
    "it carries a MAC, but this process has no --gaggle-secret: give the Manager and every Worker the same "
    "secret (GOOSE_GAGGLE_SECRET), or none"
)


class Secret:
    """The gaggle secret; its repr never shows it (a Config is a dataclass with a repr)."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(Secret)


class AuthError(ValueError):
    """A message refused: no MAC, a wrong one, one where none belongs, or out of its window."""

    def __init__(self, cause: str, reason: str) -> None:
        super().__init__(reason)
        self.cause = cause  # UNAUTHENTICATED, SIGNED_UNEXPECTEDLY, STALE or REPLAYED
        self.reason = reason


@dataclass(frozen=True)
class Binding:
    """What a MAC binds a message to besides its body.

    ``run_id`` "" means the gaggle key (before the run is known); ``worker`` the Worker
    the message is for or from, when its body does not say (an assignment's key)."""

    kind: str
    run_id: str = ""
    worker: str = ""


def gaggle_key(secret: bytes, gaggle: str) -> bytes:
    return hmac.new(secret, f"{DOMAIN}/gaggle/{gaggle}".encode(), hashlib.sha256).digest()


def run_key(k_gaggle: bytes, run_id: str) -> bytes:
    return hmac.new(k_gaggle, f"run/{run_id}".encode(), hashlib.sha256).digest()


def canonical(gaggle: str, binding: Binding, body: Mapping[str, Any], extra: bytes = b"") -> bytes:
    """The bytes a MAC covers: one JSON array, keys sorted, so sender and reader agree."""
    doc = [DOMAIN, binding.kind, gaggle, binding.run_id, binding.worker, body, extra.hex()]
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def digest(data: bytes) -> bytes:
    """What a MAC covers of a large payload (a metrics entry's data)."""
    return hashlib.sha256(data).digest()


def redis_text(value: object) -> str:
    """A hash field's value as redis-py stores it, so a MAC over it survives HSET/HGETALL."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | bytes):
        raise TypeError(f"cannot store {type(value).__name__} in a hash")
    if isinstance(value, bytes):
        return value.decode()
    return repr(value) if isinstance(value, float) else str(value)


def _text(raw: object) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else "" if raw is None else str(raw)


def _same(got: str, want: str) -> bool:
    return hmac.compare_digest(got.encode(errors="backslashreplace"), want.encode())


def _plural(noun: str) -> str:
    return noun[:-1] + "ies" if noun.endswith("y") and noun[-2:] != "ey" else noun + "s"


class Refusals:
    """Each kind of refusal logged once, then counted (each distinct message once)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or log
        self.counts: dict[tuple[str, str], int] = {}
        self._seen: dict[tuple[str, str], set[bytes]] = {}

    def note(self, kind: str, cause: str, reason: str, identity: object) -> bool:
        """Count a refusal; True when this message had not been refused before."""
        key = (cause, NOUNS.get(kind, kind))
        seen = self._seen.setdefault(key, set())
        mark = digest(identity if isinstance(identity, bytes) else repr(identity).encode())
        if mark in seen:
            return False
        if len(seen) < _MAX_SEEN:
            seen.add(mark)
        n = self.counts[key] = self.counts.get(key, 0) + 1
        if n == 1:
            article = "an" if cause[0] in "aeiou" else "a"
            self.log.warning("refused %s %s %s: %s; further ones are counted, not logged", article, cause, key[1],
                             reason)  # fmt: skip
        return True

    def total(self, cause: str | None = None) -> int:
        return sum(n for (c, _), n in self.counts.items() if cause is None or c == cause)

    def summary(self) -> list[str]:
        return [
            f"refused {n} {cause} {noun if n == 1 else _plural(noun)} (logged once)"
            for (cause, noun), n in sorted(self.counts.items())
        ]

    def log_summary(self) -> None:
        for line in self.summary():
            self.log.warning("%s", line)


class Auth:
    """A process's signing context for one gaggle.

    Without a secret (``enabled`` False) ``sign*`` return their input unchanged and
    ``verify*`` refuse only messages that carry a MAC. Every refusal raises ``AuthError``
    after ``refusals`` has counted it (and logged the first of its kind)."""

    def __init__(self, secret: Secret | bytes | None, gaggle: str, logger: logging.Logger | None = None) -> None:
        raw = secret.reveal() if isinstance(secret, Secret) else secret
        self.gaggle = gaggle
        self._gaggle_key = gaggle_key(raw, gaggle) if raw else b""
        self._run_keys: dict[str, bytes] = {}
        self.refusals = Refusals(logger)

    @property
    def enabled(self) -> bool:
        return bool(self._gaggle_key)

    def _key(self, run_id: str) -> bytes:
        if not run_id:
            return self._gaggle_key
        key = self._run_keys.get(run_id)
        if key is None:
            if len(self._run_keys) >= _MAX_RUN_KEYS:
                self._run_keys.clear()
            key = self._run_keys[run_id] = run_key(self._gaggle_key, run_id)
        return key

    def tag(self, binding: Binding, body: Mapping[str, Any], extra: bytes = b"") -> str:
        """The MAC (hex) of ``body`` under ``binding``."""
        assert self.enabled, "no secret to sign with"
        message = canonical(self.gaggle, binding, body, extra)
        return hmac.new(self._key(binding.run_id), message, hashlib.sha256).hexdigest()

    def refuse(self, kind: str, cause: str, reason: str, identity: object) -> AuthError:
        """Count (and maybe log) a refusal; return the error for the caller to raise."""
        self.refusals.note(kind, cause, reason, identity)
        return AuthError(cause, reason)

    # -- JSON documents ---------------------------------------------------------------------

    def sign(self, binding: Binding, doc: Mapping[str, Any], extra: bytes = b"") -> dict[str, Any]:
        body = {k: v for k, v in doc.items() if k != MAC}
        if self.enabled:
            body[MAC] = self.tag(binding, body, extra)
        return body

    def verify(self, binding: Binding, doc: Mapping[str, Any], extra: bytes = b"",
               identity: object = None) -> dict[str, Any]:  # fmt: skip
        """``doc`` without its MAC once the MAC is right; ``identity`` names the message when
        counting refusals (default: the whole document)."""
        got = doc.get(MAC)
        body = {k: v for k, v in doc.items() if k != MAC}
        if not self.enabled:
            if got is None:
                return body
            cause, reason = SIGNED_UNEXPECTEDLY, UNEXPECTED_MAC
        elif not isinstance(got, str):
            cause, reason = UNAUTHENTICATED, NO_MAC
        elif not _same(got, self.tag(binding, body, extra)):
            cause, reason = UNAUTHENTICATED, BAD_MAC
        else:
            return body
        ident = (binding, repr(sorted(doc.items()))) if identity is None else identity
        raise self.refuse(binding.kind, cause, reason, ident)

    def check_window(self, binding: Binding, at: object, now: float, identity: object,
                     window_s: float = WINDOW_S) -> None:  # fmt: skip
        """Refuse a dated message older than the window (a replay) or as far in the future."""
        if not self.enabled:
            return
        if isinstance(at, bool) or not isinstance(at, int | float):
            raise self.refuse(binding.kind, STALE, "it has no time", identity)
        if at < now - window_s:
            reason = f"it is dated {now - at:.0f}s ago, outside the {window_s:.0f}s replay window"
            raise self.refuse(binding.kind, STALE, reason, identity)
        if at > now + window_s:
            raise self.refuse(binding.kind, STALE, f"it is dated {at - now:.0f}s in the future", identity)

    # -- single values (acknowledgements) -----------------------------------------------------

    def sign_value(self, binding: Binding, value: str) -> str:
        """``value:mac`` (``value`` itself without a secret)."""
        return f"{value}:{self.tag(binding, {'value': value})}" if self.enabled else value

    def open_value(self, binding: Binding, raw: object) -> str:
        text = _text(raw)
        value, sep, got = text.rpartition(":")
        if not self.enabled:
            if sep:
                raise self.refuse(binding.kind, SIGNED_UNEXPECTEDLY, UNEXPECTED_MAC, (binding, text))
            return text
        if not sep:
            raise self.refuse(binding.kind, UNAUTHENTICATED, NO_MAC, (binding, text))
        if not _same(got, self.tag(binding, {"value": value})):
            raise self.refuse(binding.kind, UNAUTHENTICATED, BAD_MAC, (binding, text))
        return value

    # -- large values (the checkpoint's fields): the MAC covers their digest ------------------

    def seal(self, binding: Binding, raw: bytes) -> bytes:
        """``raw:mac`` (``raw`` itself without a secret)."""
        return raw + b":" + self.tag(binding, {"digest": digest(raw).hex()}).encode() if self.enabled else raw

    def unseal(self, binding: Binding, value: bytes) -> bytes:
        """``raw`` of a sealed value once its MAC is right; AuthError (counted) when refused."""
        if not self.enabled:
            return value
        raw, sep, got = value.rpartition(b":")
        if not sep:
            raise self.refuse(binding.kind, UNAUTHENTICATED, NO_MAC, (binding, value[:80]))
        if not _same(got.decode(errors="backslashreplace"), self.tag(binding, {"digest": digest(raw).hex()})):
            raise self.refuse(binding.kind, UNAUTHENTICATED, BAD_MAC, (binding, value[:80]))
        return raw

    # -- hashes (the run state, a Worker's heartbeat) -----------------------------------------

    def sign_fields(self, binding: Binding, fields: Mapping[str, object]) -> dict[str, object]:
        """``fields`` as Redis stores them plus ``signed`` (their names) and ``mac``;
        unchanged without a secret."""
        if not self.enabled:
            return dict(fields)
        body = {name: redis_text(value) for name, value in fields.items() if name not in (MAC, SIGNED)}
        return {**body, SIGNED: ",".join(sorted(body)), MAC: self.tag(binding, body)}

    def verify_fields(self, binding: Binding, raw: Mapping[Any, Any], need: Iterable[str]) -> dict[Any, Any]:
        """The signed fields of a hash read from Redis (keys and values as given), once its MAC
        is right and it signs every field in ``need``; every field without a secret."""
        got = {_text(k): (k, v) for k, v in raw.items() if v is not None}
        ident = (binding, sorted((n, _text(v)) for n, (_, v) in got.items()))
        if not self.enabled:
            if MAC in got:
                raise self.refuse(binding.kind, SIGNED_UNEXPECTEDLY, UNEXPECTED_MAC, ident)
            return dict(raw)
        if MAC not in got or SIGNED not in got:
            raise self.refuse(binding.kind, UNAUTHENTICATED, NO_MAC, ident)
        names = [n for n in _text(got[SIGNED][1]).split(",") if n]
        missing = [n for n in (*need, *names) if n not in got or n in (MAC, SIGNED)]
        if missing:
            raise self.refuse(binding.kind, UNAUTHENTICATED, f"it does not sign {missing[0]!r}", ident)
        body = {n: _text(got[n][1]) for n in names}
        if not _same(_text(got[MAC][1]), self.tag(binding, body)):
            raise self.refuse(binding.kind, UNAUTHENTICATED, BAD_MAC, ident)
        return {got[n][0]: got[n][1] for n in names}


class SecretCheck:
    """Does this Worker's secret match its Manager's? Judged from the manager heartbeats it
    reads before it has an assignment (pure). Without a secret, one signed beat settles it;
    with one, beats that fail for ``grace_s`` without a good one between them (someone else's
    forgery may hide the real Manager's beats for a moment, not for that long)."""

    def __init__(self, auth: Auth, gaggle: str, grace_s: float) -> None:
        self.auth = auth
        self.gaggle = gaggle
        self.grace_s = grace_s
        self.failing_since: float | None = None

    def observe(self, verified: bool | None, now: float) -> str | None:
        """``verified``: a beat that verified (True), did not (False), or none (None). Returns
        why the Worker cannot join, when it cannot."""
        if verified is not False:
            self.failing_since = None
            return None
        g = self.gaggle
        if not self.auth.enabled:
            return (f"gaggle {g!r} is authenticated (its manager signs every message) and this worker has no "
                    "--gaggle-secret: give it the manager's secret (GOOSE_GAGGLE_SECRET)")  # fmt: skip
        if self.failing_since is None:
            self.failing_since = now
        if now - self.failing_since < self.grace_s:
            return None
        return (f"the manager of gaggle {g!r} does not sign its messages with this worker's secret (it has no "
                "--gaggle-secret, or another one): give the Manager and every Worker the same secret")  # fmt: skip


# -- control commands --------------------------------------------------------------------------


class ReplayGuard:
    """Nonces seen within the window: a command is applied once, however often it is written."""

    def __init__(self, window_s: float = WINDOW_S, max_nonces: int = _MAX_SEEN) -> None:
        self.window_s = window_s
        self.max_nonces = max_nonces
        self._seen: dict[str, float] = {}  # nonce -> its time

    def admit(self, nonce: str, at: float, now: float) -> str | None:
        """None when the command is new and fresh; else why it is refused."""
        horizon = now - self.window_s
        if len(self._seen) >= self.max_nonces or (self._seen and min(self._seen.values()) < horizon):
            self._seen = {n: t for n, t in self._seen.items() if t >= horizon}
        if at < horizon:
            return f"it is dated {now - at:.0f}s ago, outside the {self.window_s:.0f}s replay window"
        if at > now + self.window_s:
            return f"it is dated {at - now:.0f}s in the future"
        if nonce in self._seen:
            return "a replay: its nonce was already used"
        if len(self._seen) >= self.max_nonces:
            return "too many commands within the replay window"
        self._seen[nonce] = at
        return None


def sign_command(auth: Auth, body: Mapping[str, Any], now: float, run_id: str = "") -> bytes:
    """A control command as bytes to write to Redis: ``body`` plus ``v``, a fresh ``nonce``,
    ``at`` (``now``, on the gaggle clock) and, with a secret, a MAC under the key of
    ``run_id`` ("" for the gaggle key)."""
    doc = {"v": 1, **body, "nonce": secrets.token_hex(12), "at": now}
    return orjson.dumps(auth.sign(Binding("command", run_id), doc))


def verify_command(auth: Auth, raw: object, now: float, guard: ReplayGuard, run_id: str = "") -> dict[str, Any]:
    """A command written by ``sign_command``, without its MAC; raises AuthError (counted,
    first of its kind logged) when it is unauthenticated, stale or a replay, and ValueError
    when it is not a command at all. Without a secret, commands are taken as they come."""
    try:
        doc = orjson.loads(raw if isinstance(raw, bytes | str) else b"")
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"a command is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("a command is not a JSON object")
    binding = Binding("command", run_id)
    body = auth.verify(binding, doc, identity=raw)
    if auth.enabled:
        nonce, at = body.get("nonce"), body.get("at")
        if not isinstance(nonce, str) or isinstance(at, bool) or not isinstance(at, int | float):
            raise auth.refuse("command", UNAUTHENTICATED, "it has no nonce or time", raw)
        why = guard.admit(nonce, float(at), now)
        if why is not None:
            raise auth.refuse("command", REPLAYED if "nonce" in why else STALE, why, raw)
    return body
