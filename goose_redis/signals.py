"""Ctrl-C and SIGTERM: the first stops gracefully, a second exits at once."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

from .logs import NOTICE

log = logging.getLogger("goose_redis")


def install_stop_handlers(on_stop: Callable[[str], None]) -> None:
    loop = asyncio.get_running_loop()
    hits = {"n": 0}

    def handler(signame: str) -> None:
        # Logged, not written raw: the line gets a timestamp like every other, and the
        # live progress line is cleared before it.
        hits["n"] += 1
        if hits["n"] > 1:
            log.warning("%s again: exiting now without reports", signame)
            os._exit(130)
        log.log(NOTICE, "%s received: stopping gracefully (press Ctrl-C again to exit now)", signame)
        on_stop(signame)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler, sig.name)
