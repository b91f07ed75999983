"""The event loop every command runs on: uvloop where it is installed, else asyncio's.

uvloop's socket writes and scheduling are cheaper than asyncio's, and a load
generator spends most of its time there. ``GOOSE_EVENT_LOOP`` chooses:
``auto`` (default: uvloop when importable), ``uvloop`` (required), ``asyncio``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .errors import InvalidOption

log = logging.getLogger("goose_redis.loop")

ENV = "GOOSE_EVENT_LOOP"
CHOICES = ("auto", "uvloop", "asyncio")
T = TypeVar("T")


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def choose(env: dict[str, str] | None = None) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """``(name, loop factory)`` for the setting in ``env`` (default: the process environment);
    the factory is None for asyncio's own loop. Raise InvalidOption for a bad setting."""
    raw = (os.environ if env is None else env).get(ENV, "") or "auto"
    wanted = raw.strip().lower()
    if wanted not in CHOICES:
        raise InvalidOption(ENV, raw, f"The {ENV} variable must be one of: {', '.join(CHOICES)}.")
    if wanted == "asyncio":
        return "asyncio", None
    factory = _uvloop_factory()
    if factory is None:
        if wanted == "uvloop":
            raise InvalidOption(ENV, raw, "uvloop is not installed (pip install uvloop), or set auto or asyncio.")
        return "asyncio", None
    return "uvloop", factory


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the chosen loop. Validate first (``choose``) when the coroutine
    must not be created for nothing: an invalid setting raises before the loop starts."""
    try:
        name, factory = choose()
    except InvalidOption:
        coro.close()  # never awaited: say nothing about it
        raise
    log.info("event loop: %s", name)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)
