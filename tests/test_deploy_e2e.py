"""The compose topology, run as separate network hosts on this machine.

Every service of compose.yaml (redis, target, manager and two workers) runs in its own
network namespace of a NetnsLab, with its own address, and reaches the others by their
service names (``/etc/netns/<ns>/hosts``), as containers on a compose network do. Each
service's command, environment and start order come from compose.yaml itself through the
real Compose implementation (tests/support/compose.py), so this test breaks when the
file drifts. Only what exists in the image alone is mapped onto this checkout:
``goose-redis`` is the venv's, ``/app/examples/`` is ``examples/``, ``/reports/`` a temp dir.

A third Worker, started later from a namespace of its own against the same Redis
address, is told by the Manager to exit cleanly: the gaggle already has its two.

The gaggle is signed, as docs/deploy.md says to run it: ``goose.env`` made from the
committed ``goose.env.example`` with a secret filled in, given to compose with ``--env-file``.

The demo target's ``GET /__hits`` (goose_redis/demo_site.py) says what it served, so the
merged report is checked against the requests the target really answered.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from conftest import require_netns
from support import redis_binary
from support.compose import REPO_ROOT, ServiceSpec, find_compose, services
from support.netns import NETNS_ETC, Host, NetnsLab

from goose_redis.demo_site import HITS_PATH, start_demo_site

# Where the image puts things, and where they are in this checkout.
CONTAINER_EXAMPLES = "/app/examples/"
CONTAINER_REPORTS = "/reports/"
# Short and small, through the same host variables a user would set for compose.
COMPOSE_ENV = {"RUN_TIME": "6s", "USERS": "8", "HATCH_RATE": "8"}
# The image's ENV that matters outside it: logs arrive as they are written.
IMAGE_ENV = {"PYTHONUNBUFFERED": "1"}

FETCH = "import sys, urllib.request\nsys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("goose-redis")
    return [str(script)] if script.exists() else [sys.executable, "-m", "goose_redis"]


def _local(value: str, reports: Path) -> str:
    if value.startswith(CONTAINER_EXAMPLES):
        return str(REPO_ROOT / "examples" / value[len(CONTAINER_EXAMPLES) :])
    if value.startswith(CONTAINER_REPORTS):
        return str(reports / value[len(CONTAINER_REPORTS) :])
    return value


def _our_command(spec: ServiceSpec, reports: Path) -> tuple[list[str], dict[str, str]]:
    """argv and environment of one of our services (the goose-redis image) on this machine."""
    assert spec.argv[:1] == ["goose-redis"], f"{spec.name}: the image's entrypoint is goose-redis: {spec.argv}"
    argv = _cli() + [_local(arg, reports) for arg in spec.argv[1:]]
    env = {key: _local(value, reports) for key, value in spec.environment.items()}
    return argv, {**IMAGE_ENV, **env}


def _redis_command(spec: ServiceSpec, host: Host, workdir: Path) -> list[str]:
    """The redis service's command, plus what the official image adds when it runs it.

    compose.yaml gives redis-server's arguments; the redis image's entrypoint starts it
    without a config file, so it listens on every interface with protected mode off.
    Here "every interface" is the namespace's eth0 address and its loopback (where the
    healthcheck's plain `redis-cli ping` connects); the port is redis-server's default.
    """
    binary = redis_binary()
    assert binary is not None
    assert spec.argv[:1] == ["redis-server"], spec.argv
    return [
        binary,
        *spec.argv[1:],
        "--bind", host.address, "127.0.0.1",
        "--port", "6379",
        "--protected-mode", "no",
        "--dir", str(workdir),
        "--daemonize", "no",
    ]  # fmt: skip


def _healthcheck_argv(spec: ServiceSpec) -> list[str]:
    test = spec.raw["healthcheck"]["test"]
    if isinstance(test, str):
        return ["sh", "-c", test]
    if test[0] == "CMD":
        return [str(a) for a in test[1:]]
    assert test[0] == "CMD-SHELL", test
    return ["sh", "-c", str(test[1])]


def _poll(what: str, timeout: float, probe: Callable[[], bool], on_timeout: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{on_timeout()}")
        time.sleep(0.1)


def _wait_healthy(lab: NetnsLab, spec: ServiceSpec) -> None:
    argv = _healthcheck_argv(spec)

    def healthy() -> bool:
        proc = lab.run(spec.name, argv, timeout=15)
        return proc.returncode == 0 and "PONG" in proc.stdout

    _poll(f"{spec.name}'s healthcheck {argv}", 20, healthy, lab.all_logs)


def _depends_on(spec: ServiceSpec) -> dict[str, str]:
    deps = spec.raw.get("depends_on") or {}
    if isinstance(deps, list):  # the short form means service_started
        return {name: "service_started" for name in deps}
    return {name: str(dep.get("condition", "service_started")) for name, dep in deps.items()}


def _status(lab: NetnsLab, host: str, env: Mapping[str, str]) -> dict[str, Any]:
    proc = lab.run(host, [*_cli(), "status", "--json"], env=env, timeout=30)
    if proc.returncode != 0:
        return {}
    return dict(json.loads(proc.stdout))


def _gone(lab: NetnsLab) -> list[str]:
    """What is left of the lab after close(): namespaces, hosts files, links."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    left = [ns for ns in [lab.switch_ns, *(h.ns for h in lab.hosts.values())] if ns in listed]
    left += [str(NETNS_ETC / h.ns) for h in lab.hosts.values() if (NETNS_ETC / h.ns).exists()]
    left += [name for name in (lab.bridge, f"gr{lab.lab_id}p") if name in links]
    return left


@pytest.mark.netns
@pytest.mark.slow
def test_compose_topology_across_network_hosts(tmp_path: Path) -> None:
    require_netns()
    if redis_binary() is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    tool = find_compose()
    if tool is None:
        pytest.skip("no Compose implementation: apt-get install -y docker-compose (or the v2 plugin)")

    secret = secrets.token_hex(32)
    env_file = tmp_path / "goose.env"
    template = (REPO_ROOT / "goose.env.example").read_text()
    env_file.write_text(template.replace("\nGOOSE_GAGGLE_SECRET=change-me\n", f"\nGOOSE_GAGGLE_SECRET={secret}\n"))
    specs = services(COMPOSE_ENV, tool=tool, env_file=env_file)
    assert set(specs) == {"redis", "target", "manager", "worker"}
    assert specs["manager"].environment["GOOSE_GAGGLE_SECRET"] == specs["worker"].environment["GOOSE_GAGGLE_SECRET"]
    reports = tmp_path / "reports"
    reports.mkdir()
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    manager_argv, manager_env = _our_command(specs["manager"], reports)
    worker_argv, worker_env = _our_command(specs["worker"], reports)
    target_argv, target_env = _our_command(specs["target"], reports)
    target_url = manager_argv[manager_argv.index("--host") + 1]
    target = urlsplit(target_url)
    assert target.hostname == "target" and target.port is not None, target_url
    expect_workers = int(manager_argv[manager_argv.index("--expect-workers") + 1])
    assert expect_workers == 2

    lab = NetnsLab(tmp_path / "logs")
    started: dict[str, subprocess.Popen[bytes]] = {}
    try:
        lab.start()
        for name in ("redis", "target", "manager", "worker-1", "worker-2", "worker-3"):
            lab.add_host(name)

        def start(service: str, host: str, argv: list[str], env: Mapping[str, str] | None = None) -> None:
            # compose's depends_on, as it would enforce it for this service
            for dep, condition in _depends_on(specs[service]).items():
                assert dep in started, f"{service} depends on {dep}, which is not started"
                if condition == "service_healthy":
                    _wait_healthy(lab, specs[dep])
            started[host] = lab.popen(host, argv, env, name=host)

        start("redis", "redis", _redis_command(specs["redis"], lab.hosts["redis"], redis_dir))
        start("target", "target", target_argv, target_env)
        # compose only promises the target was started. In a container the manager spends
        # seconds waiting for its workers first; here, make that certain on a slow machine.
        lab.wait_tcp("manager", "target", target.port)
        start("manager", "manager", manager_argv, manager_env)
        for host in ("worker-1", "worker-2"):  # --scale worker=2
            start("worker", host, worker_argv, worker_env)

        # Watch it the way docs/deploy.md says, from the host the late Worker will use.
        status: dict[str, Any] = {}

        def running() -> bool:
            nonlocal status
            status = _status(lab, "worker-3", worker_env)
            return status.get("manager", {}).get("state") == "running"

        _poll("the gaggle to start with both workers", 60, running, lambda: f"{status}\n{lab.all_logs()}")
        assert len(status["workers"]) == expect_workers, status

        # A third Worker from yet another host, while the run goes on: told to exit, cleanly.
        late = lab.popen("worker-3", worker_argv, worker_env, name="worker-3")
        assert late.wait(timeout=60) == 0, lab.logs("worker-3")
        assert "the manager told this worker to exit" in lab.stderr("worker-3"), lab.logs("worker-3")
        assert f"already has its {expect_workers} workers" in lab.stderr("worker-3"), lab.logs("worker-3")

        manager = started["manager"]
        assert manager.wait(timeout=90) == 0, lab.all_logs()
        for host in ("worker-1", "worker-2"):
            assert started[host].wait(timeout=30) == 0, lab.logs(host)
        assert "beyond --expect-workers: told to exit" in lab.stderr("manager"), lab.logs("manager")
        assert "is authenticated: every message is signed" in lab.stderr("manager"), lab.logs("manager")
        assert "refused" not in lab.all_logs(), lab.all_logs()  # nothing of a real Worker's mistaken for a forgery
        assert "Traceback" not in lab.all_logs() and secret not in lab.all_logs()

        fetched = lab.run("manager", [sys.executable, "-c", FETCH, f"{target_url}{HITS_PATH}"])
        assert fetched.returncode == 0, f"{fetched.stderr}\n{lab.logs('target')}"
        served = json.loads(fetched.stdout)
    finally:
        lab.close()

    assert not [host for host, proc in started.items() if proc.poll() is None], "processes outlived the lab"
    assert late.poll() is not None
    assert _gone(lab) == []

    for name in ("report.json", "report.html"):
        assert (reports / name).is_file(), sorted(os.listdir(reports))
    assert "<html" in (reports / "report.html").read_text()[:500].lower()
    report = json.loads((reports / "report.json").read_text())
    assert report["mode"] == "gaggle" and report["users"] == int(COMPOSE_ENV["USERS"])
    workers = report["workers"]
    assert sorted(w["index"] for w in workers) == [1, 2], workers
    assert all(w["requests"] > 0 for w in workers), workers
    assert sum(w["failures"] for w in workers) == 0, report["errors"]

    # Every request the site received was answered, and the Workers counted each one,
    # except that a followed redirect (login, comment) is one request to the client.
    statuses = {int(code): n for code, n in served["statuses"].items()}
    assert served["total"] == sum(statuses.values()), served
    redirects = sum(n for code, n in statuses.items() if 300 <= code < 400)
    merged = sum(w["all_requests"] for w in workers)
    assert merged == served["total"] - redirects, (merged, served)
    # The tables show the steady phase only (metrics reset after the ramp-up), and so
    # do the workers' own rows; all_requests includes the ramp-up.
    assert report["metrics_reset"] is True
    assert 0 < report["aggregated"]["count"] == sum(w["requests"] for w in workers) <= merged


def test_hits_endpoint_counts_answers_and_not_itself() -> None:
    """/__hits: what the demo site received and answered, by route and by status."""

    async def drive() -> tuple[dict[str, Any], dict[str, Any]]:
        runner, base = await start_demo_site()
        try:
            async with aiohttp.ClientSession() as s:
                for path in ("/", "/node/1", "/node/0", "/nowhere", "/user/logout"):
                    async with s.get(base + path) as r:
                        await r.read()
                async with s.get(base + HITS_PATH) as r:
                    first = await r.json()
                async with s.get(base + HITS_PATH) as r:
                    second = await r.json()
            return first, second
        finally:
            await runner.cleanup()

    first, second = asyncio.run(drive())
    assert first == second  # asking does not count
    assert first["hits"] == {
        "GET /": 2,  # once asked for, once where /user/logout redirects to
        "GET /node/{nid}": 2,
        "GET <unmatched>": 1,
        "GET /user/logout": 1,
    }
    assert first["total"] == 6
    assert first["statuses"] == {"200": 3, "302": 1, "404": 2}
