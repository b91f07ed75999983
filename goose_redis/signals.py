"""Ctrl-C and SIGTERM: the first stops gracefully, a second exits at once."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from .logs import NOTICE

log = logging.getLogger("goose_redis")

LAST_WORDS_S = 1.0  # how long a second Ctrl-C lets a message already on its way finish


def install_stop_handlers(
    on_stop: Callable[[str], None], in_flight: Callable[[], asyncio.Task[Any] | None] | None = None
) -> None:
    """``in_flight`` returns a task the first Ctrl-C started that others depend on (a Worker
    telling its gaggle to stop): a second Ctrl-C gives it up to a second before exiting."""
    loop = asyncio.get_running_loop()
    hits = {"n": 0}

    async def exit_after(task: asyncio.Task[Any]) -> None:
        await asyncio.wait([task], timeout=LAST_WORDS_S)
        os._exit(130)

    def handler(signame: str) -> None:
        # Logged, not written raw: the line gets a timestamp like every other, and the
        # live progress line is cleared before it.
        hits["n"] += 1
        if hits["n"] > 1:
            log.warning("%s again: exiting now without reports", signame)
            task = in_flight() if in_flight is not None else None
            if hits["n"] == 2 and task is not None and not task.done():
                loop.create_task(exit_after(task))
                return
            os._exit(130)
        log.log(NOTICE, "%s received: stopping gracefully (press Ctrl-C again to exit now)", signame)
        on_stop(signame)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler, sig.name)
