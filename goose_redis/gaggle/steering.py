"""The Manager owns the gaggle's load shape and publishes it through Redis.

The shape (``shape.py``) lives in the ``shape`` key as a versioned, self-contained
document: users over run time, who holds which slot, the throttle and the arrival
rate. Workers poll it (and wake on ``shape`` in the control channel), so a Worker that
missed a wake-up, reconnected, or joined late still lands on the current step. Every
change bumps ``epoch``: a re-split when a Worker is lost or back, or a control command.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from ..durations import parse_duration
from ..errors import InvalidOption
from ..shape import (
    MAX_PLAN_S,
    MAX_PLAN_USERS,
    Shape,
    parse_plan,
    with_hatch_rate,
    with_plan,
    with_run_time,
    with_throttle,
    with_users,
)
from . import keys as K
from .auth import Auth
from .link import RedisLink
from .protocol import ShapeMessage

log = logging.getLogger("goose_redis.gaggle.manager")

COMMANDS = ("users", "hatch-rate", "run-time", "throttle", "test-plan", "start", "stop")


class Steering:
    def __init__(self, link: RedisLink, keys: K.Keys, run_id: str, shape: Shape, auth: Auth | None = None) -> None:
        self.link = link
        self.auth = auth  # signs the published shape (a gaggle with a secret)
        self.keys = keys
        self.run_id = run_id
        self.shape = shape
        self.epoch = 0
        self.started_at: float | None = None  # gaggle clock
        self.slots: list[str] = []
        self.cause = ""  # why the shape last changed, for the Workers' logs
        self.write_run: Callable[[], Awaitable[None]] | None = None  # the Manager's write_state

    def elapsed(self) -> float:
        """Seconds since the gaggle started (0 before)."""
        return max(0.0, self.link.now() - self.started_at) if self.started_at is not None else 0.0

    def message(self) -> ShapeMessage:
        return ShapeMessage.of(self.run_id, self.epoch, self.started_at, self.shape, self.slots, self.cause)

    def set_slots(self, holders: list[str], cause: str | None = None) -> bool:
        if holders == self.slots:
            return False
        self.slots = list(holders)
        self.epoch += 1
        if cause is not None:
            self.cause = cause
        return True

    def set_shape(self, shape: Shape, cause: str = "") -> None:
        self.shape = shape
        self.epoch += 1
        self.cause = cause

    async def publish(self) -> None:
        """The shape, then the run state naming its epoch (Workers read the large shape key only
        when that grows; the Manager's ``write_state`` writes it, signed with the rest of the run
        hash in a gaggle with a secret), then the wake-up: a Worker woken sees both."""
        await self.link.client.set(self.keys.shape, self.message().to_bytes(self.auth), ex=K.LONG_TTL_S)
        if self.write_run is not None:
            await self.write_run()
        await self.link.client.publish(self.keys.control, K.WAKE_SHAPE)

    def apply(self, command: str, value: str | None, by: str = "") -> str:
        """Change the shape for a control command; return what changed, in words.

        Raises InvalidOption for a value that makes no sense (the caller reports it)."""
        shape, said = steer(self.shape, self.elapsed(), command, value)
        self.set_shape(shape, f"{said} (by {by})" if by else said)
        return said

    def describe(self) -> dict[str, Any]:
        now = self.elapsed()
        return {"users": self.shape.users_at(now), "end_s": self.shape.end_s, "throttle": self.shape.throttle}


def steer(shape: Shape, now: float, command: str, value: str | None) -> tuple[Shape, str]:
    """The shape after a control command at ``now`` (seconds after the start), and what
    changed in words; pure, so a standalone run steers its runner with the same rules."""
    if command == "users":
        n = parse_count("users", value, 0, MAX_PLAN_USERS)
        shape = with_users(shape, now, n)
        said = f"users -> {n} at {shape.hatch_rate:g}/s"
    elif command == "hatch-rate":
        rate = parse_rate("hatch-rate", value)
        shape = with_hatch_rate(shape, now, rate)
        said = f"hatch rate -> {rate:g}/s"
    elif command == "run-time":
        secs = parse_time("run-time", value)
        shape = with_run_time(shape, now, secs)
        said = f"run time -> {secs:g}s from now"
    elif command == "throttle":
        rate = parse_rate("throttle", value)
        shape = with_throttle(shape, rate)
        said = f"throttle -> {rate:g} requests/s"
    elif command == "test-plan":
        steps = parse_plan("test-plan", value or "")
        shape = with_plan(shape, now, steps)
        said = f"test plan -> {value}"
    else:
        raise InvalidOption(command, value or "", f"unknown command (one of: {', '.join(COMMANDS)})")
    return bounded(shape, command, value), said


def bounded(shape: Shape, command: str, value: str | None) -> Shape:
    """``shape``, or InvalidOption when Workers would refuse to follow it (a ramp-up of years)."""
    if problem := ShapeMessage.of("0" * 12, 0, None, shape, []).check():
        raise InvalidOption(command, value or "", f"The {command} command would take the run out of bounds: {problem}.")
    return shape


def parse_count(command: str, value: str | None, lo: int, hi: int) -> int:
    text = str(value).strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 18 and lo <= int(text) <= hi):
        raise InvalidOption(command, value or "", f"The {command} command takes a whole number, {lo} to {hi:,}.")
    return int(text)


def parse_rate(command: str, value: str | None) -> float:
    try:
        rate = float(str(value).strip())
    except ValueError:
        rate = math.nan
    if not (rate >= 0.001 and rate <= 1e6):  # also refuses NaN
        raise InvalidOption(command, value or "", f"The {command} command takes a number from 0.001 to 1,000,000.")
    return rate


def parse_time(command: str, value: str | None) -> float:
    try:
        secs = parse_duration(str(value or ""))
    except ValueError as exc:
        detail = f"The {command} command takes a time like 30s, 2m or 1h30m: {exc}."
        raise InvalidOption(command, value or "", detail) from None
    if not 0 < secs <= MAX_PLAN_S:
        detail = f"The {command} command takes a time longer than 0s and at most 30 days."
        raise InvalidOption(command, value or "", detail)
    return secs
