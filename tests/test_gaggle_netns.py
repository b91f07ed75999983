"""A gaggle spread over separate network hosts: Linux network namespaces on a private
bridge (tests/support/netns.py). Redis listens on one host's address, the target on
another's, the Manager and each Worker run on hosts of their own and reach Redis and the
target only across the lab network. Nothing touches the machine's own interfaces."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from support.netns import NetnsLab
from test_gaggle import write_load_test

pytestmark = [pytest.mark.netns, pytest.mark.slow]

REDIS_PORT = 6379
TARGET_PORT = 8080

# A target that counts what it served and tells the count on GET /_count.
COUNTING_SERVER = """\
import sys
from aiohttp import web

served = {"total": 0}


async def ok(request: web.Request) -> web.Response:
    served["total"] += 1
    return web.Response(text="ok")


async def count(request: web.Request) -> web.Response:
    return web.json_response(served)


app = web.Application()
app.router.add_get("/", ok)
app.router.add_route("*", "/any/{tail:.*}", ok)
app.router.add_get("/_count", count)
web.run_app(app, host=sys.argv[1], port=int(sys.argv[2]), access_log=None, print=None)
"""

FETCH = (
    "import sys, urllib.request\nsys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())\n"
)


def _wait_for_text(lab: NetnsLab, name: str, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in lab.stderr(name):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the log of {name} after {timeout}s\n{lab.all_logs()}")
        time.sleep(0.1)


def test_a_gaggle_across_network_hosts(lab: NetnsLab, tmp_path: Path) -> None:
    redis_host = lab.add_host("redis")
    target_host = lab.add_host("target")
    manager_host = lab.add_host("manager")
    worker_hosts = [lab.add_host("worker1"), lab.add_host("worker2")]

    lab.popen(
        redis_host,
        [
            "redis-server",
            "--bind",
            redis_host.address,
            "--port",
            str(REDIS_PORT),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--dir",
            str(tmp_path),
        ],
    )
    server = tmp_path / "counting_server.py"
    server.write_text(COUNTING_SERVER)
    lab.popen(target_host, [sys.executable, str(server), target_host.address, str(TARGET_PORT)])
    lab.wait_tcp(manager_host, redis_host.address, REDIS_PORT)
    lab.wait_tcp(worker_hosts[0], "target", TARGET_PORT)

    load_test = write_load_test(tmp_path)
    report = tmp_path / "report.json"
    redis_url = f"redis://{redis_host.address}:{REDIS_PORT}/0"
    common = ["-f", str(load_test), "--redis-url", redis_url, "-v"]
    manager = lab.popen(
        manager_host,
        [
            sys.executable,
            "-m",
            "goose_redis",
            *common,
            "--manager",
            "--expect-workers",
            "2",
            "-u",
            "4",
            "-r",
            "50",
            "-t",
            "3s",
            "--no-reset-metrics",
            "--host",
            f"http://target:{TARGET_PORT}",
            "--report-file",
            str(report),
        ],
        name="manager",
    )
    workers = [
        lab.popen(h, [sys.executable, "-m", "goose_redis", *common, "--worker"], name=h.name) for h in worker_hosts
    ]
    _wait_for_text(lab, "manager", "all 2 workers ready", 30)
    # Redis sees each Worker from its own network address.
    clients = lab.run(redis_host, ["redis-cli", "-h", redis_host.address, "-p", str(REDIS_PORT), "CLIENT", "LIST"])
    assert clients.returncode == 0, clients.stderr
    for h in (manager_host, *worker_hosts):
        assert f"addr={h.address}:" in clients.stdout, clients.stdout

    assert manager.wait(60) == 0, lab.all_logs()
    for w in workers:
        assert w.wait(20) == 0, lab.all_logs()

    served = lab.run(target_host, [sys.executable, "-c", FETCH, f"http://{target_host.address}:{TARGET_PORT}/_count"])
    assert served.returncode == 0, served.stderr
    doc = json.loads(report.read_text())
    assert [w["users"] for w in doc["workers"]] == [2, 2]
    assert all(w["requests"] > 0 for w in doc["workers"])
    assert doc["aggregated"]["count"] == json.loads(served.stdout)["total"] > 0
    assert f"connected to Redis at {redis_url}" in lab.stderr("worker1")
