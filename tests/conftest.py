"""Fixtures shared by the whole suite. The machinery lives in ``tests/support``.

Redis
    ``redis_server`` (session): one private redis-server on 127.0.0.1, no persistence.
    Tests may ``stop()``/``start()``/``kill()``/``pause()`` it; ``redis_url`` brings it back.
    Skips every test that uses it when ``redis-server`` is not installed.
    ``redis_url`` (function): the session server's URL after FLUSHALL (running again if a
    previous test stopped it).
    ``redis_factory`` (function): ``redis_factory(extra_args=None, port=None, *,
    client_kwargs=None)`` starts a private server (e.g. with ``--requirepass``); all are
    cleaned up at teardown.

HTTP target
    ``target`` (function): a ``CountingTarget`` shared by the session, counters reset
    before each test. Requests still in flight from a previous test could land after the
    reset; a test that needs exact counts under such conditions uses ``fresh_target``.
    ``fresh_target`` (function): a private ``CountingTarget``, stopped at teardown.

Processes
    ``procs`` (function): a ``ProcessTracker``; ``procs.start(args, env=None)`` runs
    ``python -m goose_redis *args`` with line collectors on stdout/stderr. Every process
    started or ``track()``-ed is killed with its process group at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from support import CountingTarget, ProcessTracker, RedisServer, redis_binary, start_redis
from support.netns import NetnsLab, netns_available


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than a few seconds (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "netns: needs root and network namespaces (ip netns); skipped where unavailable")


def _require_redis() -> None:
    if redis_binary() is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    _require_redis()
    server = start_redis()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.resume()
    redis_server.start()  # no-op when running; a previous test may have stopped it
    redis_server.flushall()
    return redis_server.url


RedisFactory = Callable[..., RedisServer]


@pytest.fixture
def redis_factory() -> Iterator[RedisFactory]:
    _require_redis()
    servers: list[RedisServer] = []

    def factory(
        extra_args: Sequence[str] | None = None,
        port: int | None = None,
        *,
        client_kwargs: dict[str, Any] | None = None,
        timeout: float = 10.0,
    ) -> RedisServer:
        server = start_redis(extra_args, port, client_kwargs=client_kwargs, timeout=timeout)
        servers.append(server)
        return server

    try:
        yield factory
    finally:
        for server in servers:
            server.cleanup()


@pytest.fixture(scope="session")
def _session_target() -> Iterator[CountingTarget]:
    with CountingTarget() as target:
        yield target


@pytest.fixture
def target(_session_target: CountingTarget) -> CountingTarget:
    _session_target.reset()
    return _session_target


@pytest.fixture(scope="module")
def module_target() -> Iterator[CountingTarget]:
    """A private ``CountingTarget`` for one test module (its tests share it, and its counts)."""
    with CountingTarget() as target:
        yield target


@pytest.fixture
def fresh_target() -> Iterator[CountingTarget]:
    with CountingTarget() as target:
        yield target


@pytest.fixture
def second_target() -> Iterator[CountingTarget]:
    """Another private target, for a test that needs two (a second run must not reach the first)."""
    with CountingTarget() as target:
        yield target


@pytest.fixture
def procs() -> Iterator[ProcessTracker]:
    tracker = ProcessTracker()
    try:
        yield tracker
    finally:
        tracker.kill_all()


def require_netns() -> None:
    """Skip with the reason where network namespaces cannot be created (not root, no iproute2)."""
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"network namespaces unavailable: {why}")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[NetnsLab]:
    """Network namespaces as separate hosts; everything they hold is removed at teardown."""
    require_netns()
    with NetnsLab(tmp_path / "logs") as netns_lab:
        yield netns_lab
