"""Ctrl-C and SIGTERM: the first stops gracefully, a second exits at once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable


def install_stop_handlers(on_stop: Callable[[str], None]) -> None:
    loop = asyncio.get_running_loop()
    hits = {"n": 0}

    def handler(signame: str) -> None:
        hits["n"] += 1
        if hits["n"] > 1:
            sys.stderr.write(f"\n{signame} again: exiting now without reports\n")
            sys.stderr.flush()
            os._exit(130)
        sys.stderr.write(f"\n{signame} received: stopping gracefully (press Ctrl-C again to exit now)\n")
        sys.stderr.flush()
        on_stop(signame)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler, sig.name)
