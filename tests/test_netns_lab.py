"""The network-namespace lab: hosts on a private bridge, reachable by service name."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require_netns
from support.netns import NETNS_ETC, NetnsLab

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module", autouse=True)
def _need_netns() -> None:
    require_netns()


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def _root_links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def _assert_gone(lab: NetnsLab) -> None:
    names = [lab.switch_ns] + [h.ns for h in lab.hosts.values()]
    listed = _namespaces()
    for ns in names:
        assert ns not in listed, listed
        assert not (NETNS_ETC / ns).exists()
    links = _root_links()
    assert lab.bridge not in links
    assert f"gr{lab.lab_id}p" not in links


def _pids_in(ns: str) -> list[int]:
    # setsid forks; give the detached child a moment to appear.
    for _ in range(50):
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        pids = [int(p) for p in out.split()]
        if pids:
            return pids
        time.sleep(0.1)
    return []


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


FETCH = (
    "import sys, urllib.request\n"
    "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())\n"
)


def test_fetch_by_service_name_across_namespaces(tmp_path: Path) -> None:
    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "hello.txt").write_text("hello from the web namespace\n")

    lab = NetnsLab(tmp_path / "logs")
    try:
        with lab:
            web = lab.add_host("web")
            client = lab.add_host("client")
            assert web.ns != client.ns and web.address != client.address
            assert web.address.startswith("10.213.") and client.address.startswith("10.213.")

            server = lab.popen(
                web,
                [
                    sys.executable,
                    "-m",
                    "http.server",
                    "8000",
                    "--bind",
                    web.address,
                    "--directory",
                    str(docroot),
                ],
            )
            lab.wait_tcp(client, "web", 8000)
            got = lab.run(client, [sys.executable, "-c", FETCH, "http://web:8000/hello.txt"])
            assert got.returncode == 0, f"{got.stderr}\n{lab.all_logs()}"
            assert got.stdout == "hello from the web namespace\n"

            # The server is bound to web's address only, so the client's own loopback is empty.
            local = lab.run(client, [sys.executable, "-c", FETCH, "http://127.0.0.1:8000/hello.txt"])
            assert local.returncode != 0

            resolved = lab.run(client, ["getent", "hosts", "web"])
            assert resolved.stdout.split()[0] == web.address, resolved
            assert "GET /hello.txt" in lab.logs("web"), lab.logs("web")

            listed = _namespaces()
            assert web.ns in listed and client.ns in listed and lab.switch_ns in listed
    finally:
        lab.close()
    assert server.poll() is not None, "server still running after close()"
    _assert_gone(lab)
    lab.close()  # idempotent
    assert "GET /hello.txt" in lab.logs("web")  # logs outlive the lab


def test_host_added_later_resolves_in_running_process(lab: NetnsLab) -> None:
    lab.add_host("early")
    waiter = lab.popen(
        "early",
        [
            sys.executable,
            "-c",
            "import socket, time\n"
            "end = time.monotonic() + 20\n"
            "while True:\n"
            "    try:\n"
            "        print(socket.gethostbyname('late'), flush=True); break\n"
            "    except OSError:\n"
            "        if time.monotonic() > end: raise\n"
            "        time.sleep(0.1)\n",
        ],
    )
    late = lab.add_host("late")
    assert waiter.wait(timeout=30) == 0, lab.logs("early")
    assert lab.stdout("early").strip() == late.address


def test_cleanup_after_failure_kills_processes(tmp_path: Path) -> None:
    lab = NetnsLab(tmp_path / "logs")
    with pytest.raises(RuntimeError, match="boom"), lab:
        lab.add_host("a")
        lab.add_host("b")
        sleeper = lab.popen("a", ["sleep", "300"])
        # A grandchild in its own session: only the namespace sweep can find it.
        lab.popen("b", ["setsid", "sleep", "300"], name="detached")
        pids = _pids_in(lab.hosts["b"].ns)
        assert pids, "detached sleep not found in namespace b"
        raise RuntimeError("boom")
    assert sleeper.poll() is not None
    assert not [pid for pid in pids if _alive(pid)], pids
    _assert_gone(lab)
    with pytest.raises(RuntimeError, match="closed"):
        lab.add_host("c")


def test_rejects_bad_names(lab: NetnsLab) -> None:
    lab.add_host("redis")
    with pytest.raises(ValueError):
        lab.add_host("redis")
    with pytest.raises(ValueError):
        lab.add_host("Bad Name")
