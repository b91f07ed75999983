"""Run services as separate network hosts on this machine with Linux network namespaces.

Layout: one "switch" namespace holds a Linux bridge; every host is its own namespace
with `eth0` (a veth whose peer is a bridge port in the switch) on a private /24 under
10.213.0.0/16, plus loopback. Nothing is created in the root namespace, so the
machine's own interfaces and routes are never touched, and no host can reach
anything outside the lab. Names resolve through /etc/netns/<ns>/hosts, which
`ip netns exec` bind-mounts over /etc/hosts.

Needs root and iproute2. Use `netns_available()` to skip cleanly.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

NETNS_ETC = Path("/etc/netns")
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


@dataclass(frozen=True)
class Host:
    name: str  # the service name other hosts resolve, e.g. "redis"
    ns: str  # the network namespace it lives in
    address: str  # its IPv4 address on the lab's /24


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def netns_available() -> tuple[bool, str]:
    """(True, "") when this process can build a lab, else (False, why)."""
    if not sys.platform.startswith("linux"):
        return False, "network namespaces need Linux"
    if shutil.which("ip") is None:
        return False, "iproute2 `ip` not found (apt-get install iproute2)"
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    probe = f"grprobe{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return False, f"cannot create a network namespace: {exc}"
    try:
        _ip("-n", probe, "link", "add", "name", "br0", "type", "bridge")
        _ip("-n", probe, "link", "add", "name", "v0", "type", "veth", "peer", "name", "v1")
        proc = subprocess.run(
            ["ip", "netns", "exec", probe, "true"], capture_output=True, text=True, timeout=30
        )
        if proc.returncode != 0:
            return False, f"`ip netns exec` does not work here: {proc.stderr.strip()}"
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bridge/veth not available in a network namespace: {exc}"
    finally:
        _ip("netns", "del", probe, check=False)
    return True, ""


class NetnsLab:
    """A private L2 network of namespaced hosts; everything it made goes away on close()."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.lab_id = secrets.token_hex(2)
        # Random third octet so concurrent labs are easy to tell apart in `ip` output.
        self.subnet_prefix = f"10.213.{secrets.randbelow(256)}"
        self.subnet = f"{self.subnet_prefix}.0/24"
        self.bridge = f"grbr{self.lab_id}"
        self.switch_ns = f"gr{self.lab_id}-switch"
        self.workdir = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="netnslab-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._ports: dict[str, str] = {}  # host name -> its bridge port in the switch namespace
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._started = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> NetnsLab:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        if self._closed:
            raise RuntimeError("lab is closed")
        if self._started:
            return
        self._started = True
        atexit.register(self.close)  # last resort if the test process is interrupted
        try:
            self._add_ns(self.switch_ns)
            _ip(
                "-n",
                self.switch_ns,
                "link",
                "add",
                "name",
                self.bridge,
                "type",
                "bridge",
                "forward_delay",
                "0",
            )
            _ip("-n", self.switch_ns, "link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    def _add_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._namespaces.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    def close(self) -> None:
        """Kill every process, delete namespaces, links and hosts files. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for proc in self._procs.values():
            _kill_group(proc)
        for ns in self._namespaces:
            _kill_namespace_pids(ns)
        for port in self._ports.values():
            _ip("-n", self.switch_ns, "link", "del", port, check=False)
        if self.switch_ns in self._namespaces:
            _ip("-n", self.switch_ns, "link", "del", self.bridge, check=False)
        for ns in reversed(self._namespaces):
            _ip("netns", "del", ns, check=False)
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
        atexit.unregister(self.close)

    # -- hosts -----------------------------------------------------------------

    def add_host(self, name: str) -> Host:
        """A new namespace `name` resolves to from every host of the lab."""
        if self._closed:
            raise RuntimeError("lab is closed")
        self.start()
        if not _NAME_RE.match(name) or name in self.hosts or name == "localhost":
            raise ValueError(f"bad or duplicate host name {name!r}")
        index = len(self.hosts) + 1
        if index > 240:
            raise ValueError("a lab holds at most 240 hosts")
        ns = f"gr{self.lab_id}-h{index}"
        port = f"gr{self.lab_id}p{index}"
        host = Host(name=name, ns=ns, address=f"{self.subnet_prefix}.{10 + index}")
        self._add_ns(ns)
        # Created inside the switch with the peer born in the host namespace: the root
        # namespace never sees either end.
        _ip(
            "-n",
            self.switch_ns,
            "link",
            "add",
            "name",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        )
        self._ports[name] = port
        _ip("-n", self.switch_ns, "link", "set", port, "master", self.bridge, "up")
        _ip("-n", ns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        self.hosts[name] = host
        self._write_hosts_files()
        return host

    def _write_hosts_files(self) -> None:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [f"{h.address}\t{h.name}" for h in self.hosts.values()]
        text = "\n".join(lines) + "\n"
        for host in self.hosts.values():
            path = NETNS_ETC / host.ns / "hosts"
            path.parent.mkdir(parents=True, exist_ok=True)
            # Rewrite in place (same inode): running processes already see the bind mount.
            with open(path, "w") as fh:
                fh.write(text)

    def _host(self, host: Host | str) -> Host:
        return self.hosts[host] if isinstance(host, str) else host

    # -- processes -------------------------------------------------------------

    def exec_argv(self, host: Host | str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self._host(host).ns, *argv]

    def env_for(self, env: Mapping[str, str] | None) -> dict[str, str]:
        """The current environment minus GOOSE_* (so a developer's shell cannot leak in), plus `env`."""
        out = {k: v for k, v in os.environ.items() if not k.startswith("GOOSE_")}
        out.update(env or {})
        return out

    def popen(
        self,
        host: Host | str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        name: str | None = None,
        cwd: Path | str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` on `host` in its own process group; output goes to `logs(name)`.

        `name` defaults to the host name (then name.2, name.3 ... for more processes).
        """
        if self._closed:
            raise RuntimeError("lab is closed")
        h = self._host(host)
        if name is None:
            name = h.name
            n = 2
            while name in self._procs:
                name = f"{h.name}.{n}"
                n += 1
        elif name in self._procs:
            raise ValueError(f"process name {name!r} already used")
        out_path, err_path = self._log_paths(name)
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                self.exec_argv(h, argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env_for(env),
                cwd=cwd,
                start_new_session=True,  # its own process group, killed as one
            )
        self._procs[name] = proc
        return proc

    def run(
        self,
        host: Host | str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command on `host` and capture its output (not logged)."""
        return subprocess.run(
            self.exec_argv(host, argv),
            capture_output=True,
            text=True,
            env=self.env_for(env),
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def wait_tcp(self, from_host: Host | str, target: str, port: int, timeout: float = 20) -> None:
        """Block until `target:port` accepts TCP connections as seen from `from_host`."""
        script = (
            "import socket,sys,time\n"
            f"end=time.monotonic()+{timeout!r}\n"
            "while True:\n"
            "    try:\n"
            f"        socket.create_connection(({target!r},{port}),timeout=1).close(); sys.exit(0)\n"
            "    except OSError as e:\n"
            "        if time.monotonic()>end: print(e); sys.exit(1)\n"
            "        time.sleep(0.1)\n"
        )
        proc = self.run(from_host, [sys.executable, "-c", script], timeout=timeout + 30)
        if proc.returncode != 0:
            raise TimeoutError(
                f"{target}:{port} not reachable from {self._host(from_host).name} within {timeout}s: "
                f"{proc.stdout.strip()} {proc.stderr.strip()}\n{self.all_logs()}"
            )

    def stop(self, name: str, timeout: float = 5) -> int | None:
        """Stop one started process (SIGTERM, then SIGKILL); its return code."""
        proc = self._procs[name]
        _kill_group(proc, timeout)
        return proc.returncode

    # -- logs ------------------------------------------------------------------

    def _log_paths(self, name: str) -> tuple[Path, Path]:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        return self.workdir / f"{safe}.stdout", self.workdir / f"{safe}.stderr"

    def stdout(self, name: str) -> str:
        return self._log_paths(name)[0].read_text(errors="replace")

    def stderr(self, name: str) -> str:
        return self._log_paths(name)[1].read_text(errors="replace")

    def logs(self, name: str) -> str:
        """stdout and stderr of process `name`, labelled, for assertion messages."""
        out_path, err_path = self._log_paths(name)
        parts = [f"=== {name}: {self._state(name)} ==="]
        for label, path in (("stdout", out_path), ("stderr", err_path)):
            text = path.read_text(errors="replace") if path.exists() else "(no file)"
            parts.append(f"--- {label} ---\n{text.rstrip()}")
        return "\n".join(parts)

    def all_logs(self) -> str:
        return "\n".join(self.logs(name) for name in self._procs)

    def _state(self, name: str) -> str:
        proc = self._procs.get(name)
        if proc is None:
            return "never started"
        code = proc.poll()
        return "running" if code is None else f"exited {code}"


def _kill_group(proc: subprocess.Popen[bytes], timeout: float = 5) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass


def _kill_namespace_pids(ns: str) -> None:
    """SIGKILL whatever still runs in `ns` (it is ours: we made the namespace)."""
    for _ in range(3):
        proc = _ip("netns", "pids", ns, check=False)
        pids = [int(p) for p in proc.stdout.split() if p.isdigit() and int(p) != os.getpid()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
