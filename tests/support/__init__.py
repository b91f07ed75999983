"""Shared test support: a private redis-server, a counting HTTP target, CLI process helpers.

The pytest fixtures wrapping these live in ``tests/conftest.py``; import the classes
from here for type hints (``from support import CountingTarget``).
"""

from .ports import free_port
from .procs import (
    REPO_ROOT,
    CliProcess,
    LineCollector,
    ProcessTracker,
    cli_env,
    kill_group,
    run_cli,
    start_cli,
    wait_for_line,
)
from .redis_server import RedisServer, RedisUnavailable, redis_binary, start_redis
from .target import CountingTarget, RecordedRequest

__all__ = [
    "REPO_ROOT",
    "CliProcess",
    "CountingTarget",
    "LineCollector",
    "ProcessTracker",
    "RecordedRequest",
    "RedisServer",
    "RedisUnavailable",
    "cli_env",
    "free_port",
    "kill_group",
    "redis_binary",
    "run_cli",
    "start_cli",
    "start_redis",
    "wait_for_line",
]
