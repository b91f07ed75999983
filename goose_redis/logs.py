"""Logging set-up: one format for every mode; Worker lines carry ``[N]``."""

from __future__ import annotations

import logging
import sys

# Normal events a user should see without -v (metrics reset, EXIT received):
# above INFO, but not labelled as a warning.
NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")


class _Prefix(logging.Filter):
    prefix = ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.prefix = self.prefix
        return True


_prefix = _Prefix()


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (NOTICE, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_prefix)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-6s %(prefix)s%(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter stays out unless asked for twice.
    for noisy in ("asyncio", "aiohttp", "redis"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose >= 3 else logging.WARNING)


def set_prefix(prefix: str) -> None:
    """``[2] `` on Worker 2; set once the Worker knows its number."""
    _prefix.prefix = prefix


def prefix() -> str:
    """The prefix set so far: a child process adds its own to its parent's."""
    return _prefix.prefix
