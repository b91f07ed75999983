"""goose-redis beside its peers, one core each: requests per second and per CPU second.

    python benchmarks/bench_peers.py                      # every generator once, 10 s each
    python benchmarks/bench_peers.py --rounds 3 -s 15     # three rounds, medians printed
    python benchmarks/bench_peers.py --only goose,locust  # a subset (names below)
    python benchmarks/bench_peers.py --nginx-only         # just serve the target, for other tools

What runs:

* the target: Debian's nginx (``apt-get install -y nginx-light``; installed when missing
  and we are root), one worker process pinned to the *target core* with ``taskset``,
  answering ``GET /`` with a tiny body and counting every request (``stub_status``);
* each generator in turn, pinned to the *generator core*, 50 users (connections), no wait:

  ============  =========================================================================
  goose         goose-redis through its real CLI, all metrics on, default event loop
  goose-asyncio the same with ``GOOSE_EVENT_LOOP=asyncio``
  goose-2p      goose-redis with ``--processes 2`` (give ``--gen-cores 0,1`` to let it use both)
  locust        Locust ``FastHttpUser``, headless, in a venv of its own under ``--cache``
  aiohttp       a bare aiohttp loop (one session, N tasks), asyncio event loop
  aiohttp-uvloop  the same on uvloop
  wrk           ``wrk -t1 -c50`` (Debian's ``wrk``): the ceiling of one core
  ============  =========================================================================

After ``--warmup`` seconds, over a window of ``--seconds``, it reads nginx's request
counter and the generator's CPU time (its whole process tree, ``/proc/PID/stat``), so the
figures leave out start-up and the end-of-run report. ``req/CPU-s`` does not depend on how
busy the machine is; ``req/s`` does. A benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache"
CLK_TCK = os.sysconf("SC_CLK_TCK")

NGINX_CONF = """
worker_processes 1;
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /nginx_status {{ stub_status; }}
        location / {{ default_type text/plain; return 200 "hello, goose\\n"; }}
    }}
}}
"""

GOOSE_LOAD_TEST = textwrap.dedent(
    """
    from goose_redis import Scenario, Transaction, User


    async def get_root(user: User) -> None:
        await user.get("/")


    bench = Scenario("Bench").register(Transaction(get_root, name="get root"))
    """
)

LOCUST_FILE = textwrap.dedent(
    """
    from locust import FastHttpUser, constant, task


    class Bench(FastHttpUser):
        wait_time = constant(0)

        @task
        def get_root(self):
            self.client.get("/")
    """
)

# The bare aiohttp loop: one session (one pool), N tasks, bodies read, nothing recorded.
AIOHTTP_LOOP = textwrap.dedent(
    """
    import asyncio, sys, time
    import aiohttp

    url, users, seconds, loop = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]

    async def user(session, deadline):
        while time.monotonic() < deadline:
            async with session.get(url) as r:
                await r.read()

    async def main():
        deadline = time.monotonic() + seconds
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=users)) as s:
            await asyncio.gather(*(user(s, deadline) for _ in range(users)))

    if loop == "uvloop":
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())
    """
)


# -- the target ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_apt(binary: str, package: str) -> str:
    """The path of ``binary``, installing Debian's ``package`` first when missing (as root)."""
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit(f"{binary} is missing: apt-get install -y {package}")
    print(f"installing {package} ...", file=sys.stderr, flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env, stdout=subprocess.DEVNULL)
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
    if not found:
        raise SystemExit(f"{package} installed but {binary} is not on PATH")
    return found


class Nginx:
    """One nginx worker on 127.0.0.1 pinned to ``core``; ``requests()`` reads stub_status."""

    def __init__(self, workdir: Path, core: int | None) -> None:
        binary = ensure_apt("nginx", "nginx-light")
        self.port = free_port()
        self.dir = workdir / "nginx"
        self.dir.mkdir()
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, port=self.port))
        self.proc = subprocess.Popen(
            pin(core) + [binary, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")],
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                self.requests()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit(f"nginx did not start; see {self.dir / 'error.log'}") from None
                time.sleep(0.05)

    def requests(self) -> int:
        """Requests nginx has answered so far, less this status request itself."""
        with urllib.request.urlopen(f"{self.url}/nginx_status", timeout=5) as r:
            lines = r.read().decode().splitlines()
        return int(lines[2].split()[2]) - 1  # "server accepts handled requests" / " a h r"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- generators ----------------------------------------------------------------------------


def pin(core: int | str | None) -> list[str]:
    return [] if core is None else ["taskset", "-c", str(core)]


def locust_binary(cache: Path) -> Path:
    """Locust in a venv of its own (installed once into ``cache``): it must not touch ours."""
    venv = cache / "locust-venv"
    binary = venv / "bin" / "locust"
    if not binary.exists():
        print(f"installing Locust into {venv} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "locust"], check=True)
    return binary


@dataclass
class Generator:
    name: str
    label: str
    command: Callable[[str, int, float, Path], list[str]]  # (url, users, seconds, workdir) -> argv
    env: dict[str, str] = field(default_factory=dict)


def goose_cmd(url: str, users: int, seconds: float, workdir: Path, processes: int = 1) -> list[str]:
    lt = workdir / "bench_goose.py"
    lt.write_text(GOOSE_LOAD_TEST)
    return [
        sys.executable, "-m", "goose_redis", "-f", str(lt), "--host", url, "-u", str(users), "-r", "1000",
        "-t", f"{seconds:.0f}s", "-q", "--report-file", str(workdir / "goose-report.json"),
        "--processes", str(processes),
    ]  # fmt: skip


def generators(cache: Path) -> list[Generator]:
    def locust_cmd(url: str, users: int, seconds: float, workdir: Path) -> list[str]:
        lf = workdir / "locustfile.py"
        lf.write_text(LOCUST_FILE)
        return [
            str(locust_binary(cache)), "-f", str(lf), "--headless", "-u", str(users), "-r", "1000",
            "-t", f"{seconds:.0f}s", "--host", url, "--only-summary", "--loglevel", "WARNING",
        ]  # fmt: skip

    def aiohttp_cmd(loop: str) -> Callable[[str, int, float, Path], list[str]]:
        return lambda url, users, seconds, _: [sys.executable, "-c", AIOHTTP_LOOP, url, str(users), str(seconds), loop]

    def wrk_cmd(url: str, users: int, seconds: float, _: Path) -> list[str]:
        return [ensure_apt("wrk", "wrk"), "-t1", f"-c{users}", f"-d{seconds:.0f}s", url + "/"]

    return [
        Generator("goose", "goose-redis (all metrics, default loop)", goose_cmd),
        Generator("goose-asyncio", "goose-redis (all metrics, asyncio loop)", goose_cmd,
                  {"GOOSE_EVENT_LOOP": "asyncio"}),  # fmt: skip
        Generator("goose-2p", "goose-redis --processes 2 (all metrics, default loop)",
                  lambda url, users, seconds, workdir: goose_cmd(url, users, seconds, workdir, 2)),  # fmt: skip
        Generator("locust", "Locust FastHttpUser", locust_cmd),
        Generator("aiohttp", "bare aiohttp loop (asyncio)", aiohttp_cmd("asyncio")),
        Generator("aiohttp-uvloop", "bare aiohttp loop (uvloop)", aiohttp_cmd("uvloop")),
        Generator("wrk", "wrk -t1", wrk_cmd),
    ]


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and all its descendants alive now (Linux /proc)."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def peak_rss_mb(pid: int) -> float:
    """Each process's peak resident memory (VmHWM), added up over ``pid`` and its descendants."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


@dataclass
class Result:
    requests: int
    seconds: float
    cpu_s: float
    rss_mb: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def per_cpu(self) -> float:
        return self.requests / self.cpu_s if self.cpu_s > 0 else 0.0


def measure(gen: Generator, nginx: Nginx, args: argparse.Namespace, workdir: Path) -> Result:
    total = args.warmup + args.seconds + 3  # the generator outlives the window
    env = dict(os.environ, **gen.env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    cmd = pin(args.gen_cores or args.gen_core) + gen.command(nginx.url, args.users, total, workdir)
    log = open(workdir / f"{gen.name}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True, cwd=workdir)
    try:
        time.sleep(args.warmup)
        if proc.poll() is not None:
            raise SystemExit(f"{gen.name} exited early ({proc.returncode}); see {workdir / (gen.name + '.log')}")
        r0, c0, t0 = nginx.requests(), tree_cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.seconds)
        r1, c1, t1 = nginx.requests(), tree_cpu_seconds(proc.pid), time.monotonic()
        rss = peak_rss_mb(proc.pid)
        try:
            proc.wait(total + 30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    return Result(r1 - r0, t1 - t0, c1 - c0, rss)


# -- the table -----------------------------------------------------------------------------


def span(values: list[float], fmt: str = "{:,.0f}") -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def table(results: dict[str, list[Result]], gens: list[Generator], args: argparse.Namespace) -> str:
    locust = results.get("locust")
    base = statistics.median(r.per_cpu for r in locust) if locust else None
    lines = [
        f"{args.users} users/connections, no wait; nginx on core {args.target_core}, generator on core "
        f"{args.gen_cores or args.gen_core}; {args.rounds} round(s) of {args.seconds:.0f} s after "
        f"{args.warmup:.0f} s warm-up; "
        "median (min-max) when several rounds",
        "",
        "| generator | requests/s (nginx) | requests per CPU-second | CPU of its core | x Locust per CPU-s"
        " | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for g in gens:
        rs = results.get(g.name)
        if not rs:
            continue
        per_cpu = [r.per_cpu for r in rs]
        ratio = f"{statistics.median(per_cpu) / base:.2f}" if base else "-"
        busy = [100 * r.cpu_s / r.seconds for r in rs]
        lines.append(
            f"| {g.label} | {span([r.rps for r in rs])} | {span(per_cpu)} | {span(busy, '{:.0f} %')} | {ratio} |"
            f" {span([r.rss_mb for r in rs], '{:.0f}')} |"
        )
    return "\n".join(lines)


def main() -> None:
    cores = sorted(os.sched_getaffinity(0))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-s", "--seconds", type=float, default=10.0, help="measured window per generator")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds before the window (start-up, ramp-up)")
    ap.add_argument("-u", "--users", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=1, help="run every generator this many times, interleaved")
    ap.add_argument("--only", help="comma-separated generator names: goose, goose-asyncio, goose-2p, locust, "
                    "aiohttp, aiohttp-uvloop, wrk")  # fmt: skip
    ap.add_argument("--target-core", type=int, default=cores[0])
    ap.add_argument("--gen-core", type=int, default=cores[-1] if len(cores) > 1 else cores[0])
    ap.add_argument("--gen-cores", help="pin the generators to these cores instead (taskset list, e.g. 0,1): "
                    "for goose-2p beside goose on a 2-core machine")  # fmt: skip
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where Locust's venv lives")
    ap.add_argument("--nginx-only", action="store_true", help="start the target, print its URL, serve until Ctrl-C")
    args = ap.parse_args()
    if args.target_core == args.gen_core and not args.gen_cores:
        print("warning: target and generator share a core; the figures are not per core", file=sys.stderr)

    gens = generators(args.cache)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        unknown = set(wanted) - {g.name for g in gens}
        if unknown:
            raise SystemExit(f"unknown generator(s): {', '.join(sorted(unknown))}")
        gens = [g for g in gens if g.name in wanted]
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        workdir = Path(tmp)
        nginx = Nginx(workdir, args.target_core)
        try:
            if args.nginx_only:
                print(nginx.url, flush=True)
                signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
                try:
                    signal.pause()
                except KeyboardInterrupt:
                    pass
                return
            if any(g.name == "locust" for g in gens):
                locust_binary(args.cache)  # install before the clock starts
            results: dict[str, list[Result]] = {}
            for rnd in range(args.rounds):
                for g in gens:
                    print(f"round {rnd + 1}: {g.label} ...", file=sys.stderr, flush=True)
                    r = measure(g, nginx, args, workdir)
                    print(f"  {r.rps:,.0f} req/s, {r.per_cpu:,.0f} req/CPU-s", file=sys.stderr, flush=True)
                    results.setdefault(g.name, []).append(r)
        finally:
            nginx.stop()
    print(table(results, gens, args))


if __name__ == "__main__":
    main()
