"""The Manager owns the gaggle's load shape and publishes it through Redis.

The shape (``shape.py``) lives in the ``shape`` key as a versioned, self-contained
document: users over run time, who holds which slot, the throttle and the arrival
rate. Workers poll it (and wake on ``shape`` in the control channel), so a Worker that
missed a wake-up, reconnected, or joined late still lands on the current step. Every
change bumps ``epoch``: a re-split when a Worker is lost or back, or a control command.
"""

from __future__ import annotations

import logging
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
from .link import RedisLink
from .protocol import ShapeMessage

log = logging.getLogger("goose_redis.gaggle.manager")

COMMANDS = ("users", "hatch-rate", "run-time", "throttle", "test-plan", "start", "stop")


class Steering:
    def __init__(self, link: RedisLink, keys: K.Keys, run_id: str, shape: Shape) -> None:
        self.link = link
        self.keys = keys
        self.run_id = run_id
        self.shape = shape
        self.epoch = 0
        self.started_at: float | None = None  # gaggle clock
        self.slots: list[str] = []

    def elapsed(self) -> float:
        """Seconds since the gaggle started (0 before)."""
        return max(0.0, self.link.now() - self.started_at) if self.started_at is not None else 0.0

    def message(self) -> ShapeMessage:
        return ShapeMessage.of(self.run_id, self.epoch, self.started_at, self.shape, self.slots)

    def set_slots(self, holders: list[str]) -> bool:
        if holders == self.slots:
            return False
        self.slots = list(holders)
        self.epoch += 1
        return True

    def set_shape(self, shape: Shape) -> None:
        self.shape = shape
        self.epoch += 1

    async def publish(self) -> None:
        async with self.link.client.pipeline(transaction=False) as p:
            p.set(self.keys.shape, self.message().to_bytes(), ex=K.LONG_TTL_S)
            p.hset(self.keys.run, "epoch", self.epoch)  # after the shape: an epoch seen is one readable
            p.publish(self.keys.control, K.WAKE_SHAPE)
            await p.execute()

    def apply(self, command: str, value: str | None) -> str:
        """Change the shape for a control command; return what changed, in words.

        Raises InvalidOption for a value that makes no sense (the caller reports it)."""
        now = self.elapsed()
        shape = self.shape
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
        self.set_shape(shape)
        return said

    def describe(self) -> dict[str, Any]:
        now = self.elapsed()
        return {"users": self.shape.users_at(now), "end_s": self.shape.end_s, "throttle": self.shape.throttle}


def parse_count(command: str, value: str | None, lo: int, hi: int) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        raise InvalidOption(command, value or "", "must be a whole number") from None
    if not lo <= n <= hi:
        raise InvalidOption(command, value or "", f"must be between {lo} and {hi:,}")
    return n


def parse_rate(command: str, value: str | None) -> float:
    try:
        rate = float(str(value).strip())
    except ValueError:
        raise InvalidOption(command, value or "", "must be a number") from None
    if not (rate > 0 and rate <= 1e6):  # also refuses NaN
        raise InvalidOption(command, value or "", "must be greater than 0 and at most 1,000,000")
    return rate


def parse_time(command: str, value: str | None) -> float:
    try:
        secs = parse_duration(str(value or ""))
    except ValueError as exc:
        raise InvalidOption(command, value or "", f"is not a duration: {exc}") from None
    if not 0 < secs <= MAX_PLAN_S:
        raise InvalidOption(command, value or "", "must be longer than 0 seconds and at most 30 days")
    return secs
