"""The shared fixtures do what conftest.py promises."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import aiohttp
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from support import (
    CountingTarget,
    LineCollector,
    ProcessTracker,
    RedisServer,
    free_port,
    run_cli,
    wait_for_line,
)

# ---------------------------------------------------------------------------- ports


def test_free_port_is_bindable_and_not_handed_out_twice() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports.pop()))


# ---------------------------------------------------------------------------- redis


def test_redis_restart_keeps_serving_on_same_port(redis_server: RedisServer, redis_url: str) -> None:
    assert redis_url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = redis_server.client()
    client.set("k", "v")
    port = redis_server.port

    redis_server.stop()
    assert not redis_server.is_running
    assert not redis_server.answers()
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)).ping()

    redis_server.start()
    assert redis_server.port == port
    assert client.ping()
    assert client.get("k") is None  # no persistence: a restart starts empty
    assert redis.Redis.from_url(redis_url).ping()


def test_redis_url_flushes_between_uses(redis_server: RedisServer, redis_url: str) -> None:
    client = redis_server.client(decode_responses=True)
    assert client.dbsize() == 0
    client.set("left-over", "1")
    redis_server.flushall()
    assert client.dbsize() == 0


def test_redis_url_restarts_a_stopped_server(redis_server: RedisServer) -> None:
    redis_server.kill()
    assert not redis_server.is_running
    url = redis_server.url
    # What the redis_url fixture does before every test:
    redis_server.start()
    redis_server.flushall()
    assert redis.Redis.from_url(url).ping()


def test_redis_factory_with_password(redis_factory: Callable[..., RedisServer]) -> None:
    server: RedisServer = redis_factory(["--requirepass", "s3cret"], client_kwargs={"password": "s3cret"})
    assert server.client().ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=server.port, retry=Retry(NoBackoff(), 0)).ping()
    assert redis.Redis.from_url(server.url_with(password="s3cret")).ping()
    assert "requirepass" in " ".join(server.command())


def test_redis_server_reports_startup_failure(redis_factory: Callable[..., RedisServer]) -> None:
    with pytest.raises(RuntimeError, match="exited with"):
        redis_factory(["--no-such-option", "1"])


# ---------------------------------------------------------------------------- target


def test_target_counts_hits(target: CountingTarget) -> None:
    async def drive() -> dict[str, object]:
        jar = aiohttp.CookieJar(unsafe=True)  # keep cookies from 127.0.0.1
        async with aiohttp.ClientSession(target.url, cookie_jar=jar) as s:
            for _ in range(3):
                async with s.get("/") as r:
                    assert r.status == 200 and await r.text() == "ok"
            async with s.post("/any/a/b?x=1", data=b"payload") as r:
                assert r.status == 200
            async with s.head("/any/h") as r:
                assert r.status == 200
            async with s.get("/status/503") as r:
                assert r.status == 503
            async with s.get("/status/204") as r:
                assert r.status == 204
            async with s.get("/json") as r:
                assert (await r.json())["ok"] is True
            async with s.put("/echo?q=1", data=b"hello", headers={"X-Goose": "honk"}) as r:
                echo = await r.json()
            async with s.get("/cookie/check") as r:
                assert r.status == 401
            async with s.get("/cookie/set") as r:
                assert r.status == 200
            async with s.get("/cookie/check") as r:
                assert r.status == 200
            async with s.get("/missing") as r:
                assert r.status == 404
            return dict(echo)

    echo = asyncio.run(drive())
    assert echo["method"] == "PUT" and echo["body"] == "hello" and echo["query"] == {"q": "1"}
    assert isinstance(echo["headers"], dict) and echo["headers"]["X-Goose"] == "honk"

    assert target.hits("GET /") == 3
    assert target.hits("POST /any/a/b") == 1  # query not part of the key
    assert target.hits("HEAD /any/h") == 1
    assert target.hits("GET /cookie/check") == 2
    assert target.hits("GET /missing") == 1
    assert target.total() == 13
    assert target.completed_total() == 13
    assert target.hits() == target.completed()
    posted = [r for r in target.recent() if r.method == "POST"]
    assert posted[0].body == b"payload" and posted[0].query_string == "x=1"

    target.reset()
    assert target.total() == 0 and target.hits() == {} and target.recent() == []


def test_target_counts_received_before_completed(fresh_target: CountingTarget) -> None:
    async def drive() -> None:
        async with aiohttp.ClientSession(fresh_target.url) as s:
            request = asyncio.create_task(s.get("/slow?ms=400"))
            await asyncio.to_thread(fresh_target.wait_for_hits, 1, "GET /slow", 5.0)
            assert fresh_target.completed("GET /slow") == 0  # still sleeping in the handler
            async with await request as r:
                assert r.status == 200
        assert fresh_target.completed("GET /slow") == 1

    asyncio.run(drive())


def test_target_is_reachable_from_a_subprocess(target: CountingTarget) -> None:
    code = f"import urllib.request; print(urllib.request.urlopen('{target.url}/any/sub').status)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "200"
    assert target.hits("GET /any/sub") == 1


def test_wait_for_hits_times_out_readably(target: CountingTarget) -> None:
    with pytest.raises(AssertionError, match=r"0 < 1 requests received for GET /never"):
        target.wait_for_hits(1, "GET /never", timeout=0.1)


# ---------------------------------------------------------------------------- processes


_ECHO_UNTIL_STDIN_CLOSES = (
    "import sys\nprint('hello one', flush=True)\nprint('hello two', flush=True)\nsys.stdin.read()\n"
)


def test_line_collector_waits_and_times_out_readably() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _ECHO_UNTIL_STDIN_CLOSES],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    tracker = ProcessTracker()
    tracker.track(proc)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        out = LineCollector(proc.stdout, "stdout")
        assert out.wait_for(r"hello (\w+)", timeout=10) == "hello one"
        assert out.wait_for_match(r"hello (\w+)", since=1).group(1) == "two"
        assert wait_for_line(out, "two", time.monotonic() + 5) == "hello two"

        started = time.monotonic()
        with pytest.raises(AssertionError) as excinfo:
            out.wait_for("never printed", timeout=0.2)
        message = str(excinfo.value)
        assert "timed out after 0.2s" in message and "never printed" in message
        assert "hello one\nhello two" in message  # the captured output, for the failure report
        assert time.monotonic() - started < 5

        proc.stdin.close()  # the child exits: waiting for more must end at EOF, not the deadline
        started = time.monotonic()
        with pytest.raises(AssertionError, match="the stream ended"):
            out.wait_for("never printed", timeout=30)
        assert time.monotonic() - started < 10
        assert out.closed and out.text() == "hello one\nhello two"
    finally:
        tracker.kill_all()


def test_process_tracker_kills_the_process_group() -> None:
    # A parent that starts a child in its own group and then hangs: both must die.
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    tracker = ProcessTracker()
    tracker.track(proc)
    assert proc.stdout is not None
    child_pid = int(LineCollector(proc.stdout).wait_for(r"^\d+$", timeout=10))
    tracker.kill_all()
    assert proc.poll() is not None
    deadline = time.monotonic() + 5
    while _alive(child_pid):
        assert time.monotonic() < deadline, "the child survived the group kill"
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    # The orphaned child is reaped by init; a zombie or missing /proc entry both mean gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(importlib.util.find_spec("goose_redis.__main__") is None, reason="goose_redis has no __main__ yet")
def test_run_cli_and_procs_run_the_package(procs: ProcessTracker) -> None:
    result = run_cli(["--help"], timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout

    cli = procs.start(["--help"])
    assert "Usage" in cli.stdout.wait_for("Usage", timeout=30)
    assert cli.wait(30) == 0, cli.output()
