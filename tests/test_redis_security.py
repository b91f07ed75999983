"""A shared Redis, locked down: an ACL user confined to goose-redis's keys, and TLS.

The ACL user of docs/deploy.md may only touch ``goose:*`` keys and channels with the
commands the gaggle (and ``goose-redis status``) issue. A real redis-server runs with that
ACL and the default user disabled; a 1-Manager/1-Worker gaggle runs as that user, Redis's
own command statistics show it issued exactly the listed commands, its ACL log shows
nothing was refused, anything outside the prefix is refused, and the password never shows.

TLS: a private CA, a server and a client certificate made with the ``openssl`` CLI;
redis-server's TLS port with client certificates required (Redis's default). The CA and
the client certificate go in the URL's query (redis-py's ``from_url`` passes
``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs`` through), so no
option of our own is needed. Without them the run fails at once with one clear line.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from support import CliProcess, CountingTarget, ProcessTracker, RedisServer, free_port, run_cli
from support.procs import REPO_ROOT

pytestmark = pytest.mark.slow

DEPLOY_DOC = REPO_ROOT / "docs" / "deploy.md"
USER = "gooseuser"
# Every command the Manager, the Workers and `goose-redis status` send (goose_redis/gaggle/).
# AUTH and HELLO need no grant. Keep docs/deploy.md in step: a test compares them.
GOOSE_COMMANDS = (
    "ping", "time",
    "get", "getrange", "set", "del", "exists", "expire",
    "hset", "hget", "hmget", "hgetall", "hkeys", "hdel",
    "sadd", "srem", "smembers",
    "xadd", "xread", "xlen", "xtrim",
    "publish", "subscribe",
)  # fmt: skip
# Sent only when someone steers the gaggle (`goose-redis control` keeps its events list).
CONTROL_COMMANDS = ("rpush", "ltrim")
GRANTED = GOOSE_COMMANDS[:-2] + CONTROL_COMMANDS + GOOSE_COMMANDS[-2:]
ACL_RULES = "resetkeys ~goose:* resetchannels &goose:* -@all " + " ".join(f"+{c}" for c in GRANTED)
# The connection handshake, and older redis-py versions announcing themselves (their
# refusal is ignored by redis-py): not the gaggle's own commands.
HANDSHAKE = {"auth", "hello", "client|setinfo"}

LOAD_TEST = """\
from goose_redis import Scenario, Transaction, User


async def index(user: User) -> None:
    await user.get("/", name="index")


quick = Scenario("Quick").register(Transaction(index, name="index"))
"""
USERS, ITERATIONS = 2, 5


@dataclass
class Run:
    manager: CliProcess
    worker: CliProcess
    report: dict[str, Any]
    report_text: str


def run_gaggle(procs: ProcessTracker, url: str, target: CountingTarget, workdir: Path) -> Run:
    """One Manager (URL from GOOSE_REDIS_URL) and one Worker (URL from --redis-url), to the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    load_test = workdir / "loadtest.py"
    load_test.write_text(LOAD_TEST)
    report_path = workdir / "report.json"
    worker = procs.start(["-f", str(load_test), "--worker", "--redis-url", url, "-v"])
    manager_args = [
        "-f", str(load_test), "--manager", "--expect-workers", "1",
        "-u", str(USERS), "-r", "20", "--iterations", str(ITERATIONS), "--no-reset-metrics",
        "--host", target.url, "--report-file", str(report_path), "-v",
    ]  # fmt: skip
    manager = procs.start(manager_args, env={"GOOSE_REDIS_URL": url})
    assert manager.wait(60) == 0, manager.output()
    assert worker.wait(30) == 0, worker.output()
    text = report_path.read_text()
    return Run(manager, worker, json.loads(text), text)


def assert_completed(run: Run, target: CountingTarget) -> None:
    expected = USERS * ITERATIONS
    assert run.report["aggregated"]["count"] == expected, run.manager.output()
    assert run.report["aggregated"]["fail_count"] == 0, run.report["errors"]
    assert [w["requests"] for w in run.report["workers"]] == [expected]
    assert target.completed_total() == expected


# -- the ACL user ------------------------------------------------------------------------------


def _acl_server(redis_factory: Callable[..., RedisServer], tmp_path: Path, password: str) -> RedisServer:
    admin_password = secrets.token_hex(12)
    aclfile = tmp_path / "users.acl"
    lines = [
        "user default off",
        f"user admin on >{admin_password} ~* &* +@all",
        f"user {USER} on >{password} {ACL_RULES}",
    ]
    aclfile.write_text("\n".join(lines) + "\n")
    return redis_factory(["--aclfile", str(aclfile)], client_kwargs={"username": "admin", "password": admin_password})


def _commands_called(admin: redis.Redis) -> set[str]:
    stats: dict[str, Any] = admin.info("commandstats")
    return {name.removeprefix("cmdstat_") for name, row in stats.items() if int(row.get("calls", 0)) > 0}


def test_gaggle_runs_as_an_acl_user_confined_to_its_prefix(
    redis_factory: Callable[..., RedisServer], fresh_target: CountingTarget, procs: ProcessTracker, tmp_path: Path
) -> None:
    password = secrets.token_urlsafe(18)
    server = _acl_server(redis_factory, tmp_path, password)
    url = server.url_with(username=USER, password=password)
    admin = server.client()
    admin.config_resetstat()
    admin.acl_log_reset()

    # A wrong password: refused at once, one line, and no password shown either.
    wrong = secrets.token_urlsafe(18)
    refused = procs.start(
        ["-f", str(REPO_ROOT / "examples" / "drupal_loadtest.py"), "--worker"],
        env={"GOOSE_REDIS_URL": server.url_with(username=USER, password=wrong)},
    )

    run = run_gaggle(procs, url, fresh_target, tmp_path / "gaggle")
    assert_completed(run, fresh_target)
    status = run_cli(["status", "--json"], env={"GOOSE_REDIS_URL": url}, timeout=60)
    assert status.returncode == 0, status
    assert json.loads(status.stdout)["manager"]["state"] == "done"
    assert refused.wait(30) == 1, refused.output()

    # Nothing the gaggle did was refused, and it used exactly the commands it was granted.
    log = admin.acl_log()
    denied = [e for e in log if e["reason"] != "auth" and e["object"] not in HANDSHAKE]
    assert denied == [], denied
    assert [e["username"] for e in log if e["reason"] == "auth"] == [USER], log  # the wrong password
    called = _commands_called(admin) - HANDSHAKE - {"config|resetstat", "acl|log", "acl|log-reset", "info"}
    assert called == set(GOOSE_COMMANDS), (called ^ set(GOOSE_COMMANDS), called)
    assert [k for k in admin.scan_iter() if not k.startswith(b"goose:")] == []

    # Redis itself refuses that user anything outside the prefix.
    goose = server.client(username=USER, password=password)
    assert goose.set("goose:acl-probe", "1") and goose.delete("goose:acl-probe") == 1
    admin.acl_log_reset()
    for forbidden in (
        lambda: goose.set("other:key", "1"),
        lambda: goose.get("session:42"),
        lambda: goose.publish("other-channel", "hi"),
        lambda: goose.flushall(),
        lambda: goose.keys("*"),
        lambda: goose.config_get("requirepass"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            forbidden()
    refusals = {(e["reason"], e["object"]) for e in admin.acl_log()}
    assert {("key", "other:key"), ("key", "session:42"), ("channel", "other-channel")} <= refusals, refusals
    assert {("command", "flushall"), ("command", "keys")} <= refusals, refusals
    assert admin.exists("other:key") == 0

    # The password never appears; the redacted URL does, so the check is not vacuous.
    for proc in (run.manager, run.worker, refused):
        assert password not in proc.output() and wrong not in proc.output(), proc.output()
    assert password not in run.report_text and password not in status.stdout + status.stderr
    assert f"{USER}:***@127.0.0.1:{server.port}" in run.worker.stderr.text(), run.worker.output()
    refused_lines = refused.stderr.text().strip().splitlines()
    assert len(refused_lines) == 1 and "invalid username-password pair" in refused_lines[0], refused.output()
    assert f"{USER}:***@" in refused_lines[0]


def _acl_users(redis_factory: Callable[..., RedisServer], tmp_path: Path, users: dict[str, str]) -> RedisServer:
    """A server whose ACL file holds an admin (for the test's own client) and ``users`` (name -> rules)."""
    admin_password = secrets.token_hex(12)
    aclfile = tmp_path / "users.acl"
    lines = ["user default off", f"user admin on >{admin_password} ~* &* +@all"]
    lines += [f"user {name} on >{name}-pw {rules}" for name, rules in users.items()]
    aclfile.write_text("\n".join(lines) + "\n")
    return redis_factory(["--aclfile", str(aclfile)], client_kwargs={"username": "admin", "password": admin_password})


def _only_error_line(proc: CliProcess, *expected: str) -> str:
    lines = proc.stderr.text().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.output()
    assert all(e in lines[0] for e in expected), lines[0]
    assert "Traceback" not in proc.output()
    return lines[0]


def test_an_acl_that_forbids_the_gaggle_stops_worker_and_manager_at_once_with_one_line(
    redis_factory: Callable[..., RedisServer], procs: ProcessTracker, tmp_path: Path
) -> None:
    """NOPERM is final: retrying would wait for ever. A user confined to team-a's keys and
    channels, pointed at the default gaggle, gets one line naming what was refused and the fix."""
    team_a = ACL_RULES.replace("~goose:*", "~goose:team-a:*").replace("&goose:*", "&goose:team-a:*")
    server = _acl_users(redis_factory, tmp_path, {"teama": team_a})
    url = server.url_with(username="teama", password="teama-pw")
    load_test = tmp_path / "loadtest.py"
    load_test.write_text(LOAD_TEST)
    worker = procs.start(["-f", str(load_test), "--worker", "--redis-url", url])
    manager = procs.start(["-f", str(load_test), "--manager", "--expect-workers", "1", "-H", "http://127.0.0.1:9",
                           "--redis-url", url])  # fmt: skip
    for proc in (worker, manager):
        assert proc.wait(20) == 1, proc.output()
        _only_error_line(proc, "refused", "NOPERM", "docs/deploy.md", "teama:***@")


def test_an_acl_without_xadd_fails_the_worker_and_the_manager_reports_incomplete_totals(
    redis_factory: Callable[..., RedisServer], fresh_target: CountingTarget, procs: ProcessTracker, tmp_path: Path
) -> None:
    """Running a load whose metrics go nowhere is worse than stopping: the Worker stops with one
    line, and the Manager, which lost it, says its totals are incomplete (exit 3)."""
    server = _acl_users(redis_factory, tmp_path, {USER: ACL_RULES, "noxadd": ACL_RULES.replace(" +xadd", "")})
    load_test = tmp_path / "loadtest.py"
    load_test.write_text(LOAD_TEST)
    report_path = tmp_path / "report.json"
    manager = procs.start(["-f", str(load_test), "--manager", "--expect-workers", "1", "-u", "2", "-r", "20",
                           "-t", "30s", "-H", fresh_target.url, "--report-file", str(report_path),
                           "--redis-url", server.url_with(username=USER, password=f"{USER}-pw")])  # fmt: skip
    worker = procs.start(["-f", str(load_test), "--worker",
                          "--redis-url", server.url_with(username="noxadd", password="noxadd-pw")])  # fmt: skip
    assert worker.wait(20) == 1, worker.output()
    _only_error_line(worker, "refused sending metrics", "NOPERM", "'xadd'", "docs/deploy.md")
    assert manager.wait(30) == 3, manager.output()
    report = json.loads(report_path.read_text())
    assert report["integrity"]["complete"] is False
    assert any("worker 1" in p for p in report["integrity"]["problems"]), report["integrity"]


def test_deploy_doc_shows_the_tested_acl() -> None:
    text = DEPLOY_DOC.read_text()
    assert f"user {USER} on >" in text
    assert ACL_RULES in text, f"docs/deploy.md must carry the tested rules:\n{ACL_RULES}"


# -- TLS --------------------------------------------------------------------------------------

OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
[client]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(directory: Path, *args: str) -> None:
    proc = subprocess.run(["openssl", *args], cwd=directory, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"openssl {' '.join(args)}: {proc.stderr}"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed (apt-get install openssl)")
    d = tmp_path_factory.mktemp("tls")
    (d / "openssl.cnf").write_text(OPENSSL_CONFIG)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(d, "req", "-x509", "-new", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=goose-redis test CA", "-config", "openssl.cnf", "-extensions", "ca")  # fmt: skip
    for name in ("server", "client"):
        _openssl(d, "req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN=goose-redis test {name}", "-config", "openssl.cnf")  # fmt: skip
        _openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", "openssl.cnf", "-extensions", name)  # fmt: skip
    return Certs(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key")


def _tls_server(redis_factory: Callable[..., RedisServer], certs: Certs) -> RedisServer:
    port = free_port()
    args = [
        "--port", "0",  # no plain-text port at all
        "--tls-port", str(port),
        "--tls-cert-file", str(certs.server_cert),
        "--tls-key-file", str(certs.server_key),
        "--tls-ca-cert-file", str(certs.ca),
        "--tls-auth-clients", "yes",
    ]  # fmt: skip
    client = {
        "ssl": True,
        "ssl_ca_certs": str(certs.ca),
        "ssl_certfile": str(certs.client_cert),
        "ssl_keyfile": str(certs.client_key),
    }
    try:
        return redis_factory(args, port=port, client_kwargs=client)
    except RuntimeError as exc:
        if "Bad directive" in str(exc):
            pytest.skip(f"this redis-server was built without TLS: {exc}")
        raise


def _one_line(proc: CliProcess) -> str:
    lines = proc.stderr.text().strip().splitlines()
    assert len(lines) == 1, proc.output()
    assert "Traceback" not in proc.output()
    return lines[0]


def test_gaggle_over_tls_with_a_private_ca(
    redis_factory: Callable[..., RedisServer],
    certs: Certs,
    fresh_target: CountingTarget,
    procs: ProcessTracker,
    tmp_path: Path,
) -> None:
    server = _tls_server(redis_factory, certs)
    base = f"rediss://127.0.0.1:{server.port}/0"
    ca_only = {"ssl_ca_certs": str(certs.ca), "ssl_cert_reqs": "required"}
    with_client = {**ca_only, "ssl_certfile": str(certs.client_cert), "ssl_keyfile": str(certs.client_key)}
    url = f"{base}?{urlencode(with_client)}"

    # Certificates that do not fit fail at once (not after the 60 s a lost Redis gets),
    # with one line saying what to add. Run beside the gaggle that works.
    example = str(REPO_ROOT / "examples" / "drupal_loadtest.py")
    no_ca = procs.start(
        ["-f", example, "--manager", "--expect-workers", "1", "-H", fresh_target.url, "--gaggle", "no-ca"],
        env={"GOOSE_REDIS_URL": base},
    )
    ca_only_url = f"{base}?{urlencode(ca_only)}"
    no_client_cert = procs.start(["-f", example, "--worker", "--gaggle", "no-cert", "--redis-url", ca_only_url])

    run = run_gaggle(procs, url, fresh_target, tmp_path / "gaggle")
    assert_completed(run, fresh_target)
    assert f"connected to Redis at {base}?" in run.worker.stderr.text(), run.worker.output()

    assert no_ca.wait(30) == 1, no_ca.output()
    line = _one_line(no_ca)
    assert line.startswith(f"Error: Redis at {base}: cannot verify its TLS certificate:"), line
    assert "ssl_ca_certs" in line
    assert no_client_cert.wait(30) == 1, no_client_cert.output()
    # With TLS 1.3 the server rejects a missing client certificate after the handshake, and
    # its alert can lose the race with its reset of the connection: that first attempt looks
    # like a network problem (one warning, retried), the next one gets the alert.
    *before, line = no_client_cert.stderr.text().strip().splitlines()
    assert "refused the TLS handshake" in line and "ssl_certfile" in line, no_client_cert.output()
    assert len(before) <= 2 and all("cannot reach Redis" in b for b in before), no_client_cert.output()
    assert "Traceback" not in no_client_cert.output()
    assert server.client().ping()
