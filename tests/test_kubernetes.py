"""docker/kubernetes/: schema-valid for a pinned Kubernetes, consistent, and runnable.

No cluster runs here. Instead:

* every manifest is validated with kubernetes-validate against the bundled schemas of
  Kubernetes ``KUBERNETES_VERSION``, in strict mode (an unknown field fails), offline;
* the real kustomize (``kubectl kustomize``, where kubectl is installed) builds the
  directory, and what it builds validates too;
* the pieces agree: the Workers' parallelism and completions with the Manager's
  GOOSE_EXPECT_WORKERS, every GOOSE_* variable with an option goose-redis reads, the
  image and its entrypoint with docker/Dockerfile, every Secret, ConfigMap, volume,
  claim and Service referenced with one that exists;
* the commands run: the target's, the Manager's and every Worker's arguments and
  environment, taken from the manifests, run with the real CLI against a private
  redis-server on loopback, and the merged totals equal what the site served.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from support.compose import REPO_ROOT, dockerfile_entrypoint
from support.ports import free_port
from support.procs import cli_command

from goose_redis.demo_site import HITS_PATH
from goose_redis.options import OPTIONS
from goose_redis.verdict import EXIT_ERROR, EXIT_FAILED, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_INVALID

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[test]'")

K8S_DIR = REPO_ROOT / "docker" / "kubernetes"
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
KUBERNETES_VERSION = "1.30.0"
NAMESPACE = "goose-redis"
IMAGE = "goose-redis"  # the name kustomization.yaml's `images:` rewrites
# Applied by hand after the run, not by kustomize (its header says why).
STANDALONE = {"reports-reader.yaml"}
# Variables for options being added on other branches; drop an entry once OPTIONS has it.
# -- reading the directory ----------------------------------------------------------------


def kustomization() -> dict[str, Any]:
    return dict(yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text()))


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_docs() -> list[tuple[str, dict[str, Any]]]:
    """(file, document) for every manifest: kustomize's resources, then the standalone ones."""
    files = [*kustomization()["resources"], *sorted(STANDALONE)]
    return [(name, doc) for name in files for doc in load_docs(K8S_DIR / name)]


def find(kind: str, name: str) -> dict[str, Any]:
    found = [doc for _, doc in all_docs() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return dict(doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"])


def workloads() -> list[dict[str, Any]]:
    return [doc for _, doc in all_docs() if doc["kind"] in ("Deployment", "Job", "Pod")]


def our_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container that runs the goose-redis image."""
    for doc in workloads():
        for c in pod_spec(doc)["containers"]:
            if c["image"].split(":")[0] == IMAGE:
                yield doc, c


def container(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec(doc)["containers"] if c["name"] == name)


def plain_env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def option_value(args: list[str], option: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == option]


def expect_workers() -> int:
    return int(plain_env(container(find("Job", "goose-manager"), "manager"))["GOOSE_EXPECT_WORKERS"])


# -- schemas --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "doc"), all_docs(), ids=[f"{n}:{d['kind']}/{d['metadata']['name']}" for n, d in all_docs()]
)
def test_manifest_validates_strictly_against_pinned_kubernetes(name: str, doc: dict[str, Any]) -> None:
    assert kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True) == "1.30"


def test_strict_mode_rejects_unknown_fields_and_wrong_types() -> None:
    """The validation above would catch a misspelt field: prove it on a broken copy."""
    job = find("Job", "goose-worker")
    misspelt = json.loads(json.dumps(job))
    pod_spec(misspelt)["containers"][0]["enviroment"] = []
    with pytest.raises(kubernetes_validate.ValidationError, match="enviroment"):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSION, strict=True)
    wrong_type = json.loads(json.dumps(job))
    wrong_type["spec"]["parallelism"] = "4"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, KUBERNETES_VERSION, strict=True)


def test_validation_needs_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The schemas ship inside the package: validating opens no connection and resolves no name."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network use during validation: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for _, doc in all_docs():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_yaml_file_is_applied_somehow() -> None:
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk == set(kustomization()["resources"]) | STANDALONE


# -- the real kustomize ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomize build is not checked")
    # A copy, so the secret file the README asks for is never written into the checkout.
    work = tmp_path_factory.mktemp("kustomize") / "kubernetes"
    shutil.copytree(K8S_DIR, work, ignore=shutil.ignore_patterns("gaggle-secret.env"))
    (work / "gaggle-secret.env").write_text("secret=test-secret-value\n")
    proc = subprocess.run([kubectl, "kustomize", str(work)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def test_kustomize_builds_every_resource_and_generator(built: list[dict[str, Any]]) -> None:
    k = kustomization()
    expected = {(d["kind"], d["metadata"]["name"]) for name in k["resources"] for d in load_docs(K8S_DIR / name)}
    expected |= {("ConfigMap", g["name"]) for g in k["configMapGenerator"]}
    expected |= {("Secret", g["name"]) for g in k["secretGenerator"]}
    assert {(d["kind"], d["metadata"]["name"]) for d in built} == expected
    for doc in built:
        assert kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True) == "1.30"
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE == k["namespace"], doc["metadata"]


def test_kustomize_fills_the_configmap_secret_and_image(built: list[dict[str, Any]]) -> None:
    by = {(d["kind"], d["metadata"]["name"]): d for d in built}
    assert by[("ConfigMap", "goose-loadtest")]["data"] == {"loadtest.py": (K8S_DIR / "loadtest.py").read_text()}
    secret = by[("Secret", "goose-gaggle")]
    assert set(secret["data"]) == {"secret"}  # the key the containers' secretKeyRef names
    images = {c["image"] for kind in ("Job", "Deployment") for d in built if d["kind"] == kind
              for c in d["spec"]["template"]["spec"]["containers"]}  # fmt: skip
    rule = kustomization()["images"][0]
    assert f"{rule['newName']}:{rule['newTag']}" in images


# -- the pieces agree -----------------------------------------------------------------------


def test_worker_count_is_the_same_in_both_jobs() -> None:
    workers = find("Job", "goose-worker")["spec"]
    assert workers["parallelism"] == workers["completions"] == expect_workers() >= 1


def test_every_goose_variable_is_an_option_goose_redis_reads() -> None:
    """A misspelt GOOSE_ variable would be ignored without a word."""
    known = {opt.envvar for opt in OPTIONS if opt.envvar}
    seen = set()
    for doc, c in our_containers():
        for entry in c.get("env", []):
            name = entry["name"]
            seen.add(name)
            assert name in known, f"{doc['metadata']['name']}: {name} is not an option"
    assert {"GOOSE_REDIS_URL", "GOOSE_EXPECT_WORKERS", "GOOSE_GAGGLE_SECRET"} <= seen


def test_image_entrypoint_and_user_match_the_dockerfile() -> None:
    assert dockerfile_entrypoint(DOCKERFILE) == ["goose-redis"]
    uid = next(
        line.split("=", 1)[1].strip() for line in DOCKERFILE.read_text().splitlines() if "ARG GOOSE_UID=" in line
    )
    found = list(our_containers())
    assert {doc["metadata"]["name"] for doc, _ in found} == {"target", "goose-manager", "goose-worker"}
    for doc, c in found:
        assert "command" not in c, "the image's entrypoint (goose-redis) must run: give args only"
        assert c["image"] == f"{IMAGE}:local"
        assert str(pod_spec(doc)["securityContext"]["runAsUser"]) == uid
    assert [r["name"] for r in kustomization()["images"]] == [IMAGE]


def test_every_reference_names_something_that_exists() -> None:
    k = kustomization()
    secrets_ = {g["name"] for g in k["secretGenerator"]}
    config_maps = {g["name"]: [f.rpartition("=")[2] for f in g["files"]] for g in k["configMapGenerator"]}
    claims = {d["metadata"]["name"] for _, d in all_docs() if d["kind"] == "PersistentVolumeClaim"}
    for doc in workloads():
        spec = pod_spec(doc)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            for entry in c.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in secrets_ and ref["key"] == "secret", ref
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes, mount
        for v in volumes.values():
            if "configMap" in v:
                assert v["configMap"]["name"] in config_maps, v
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, v
    # The secret generator's key is documented where the file is made.
    assert "secret=" in (K8S_DIR / "kustomization.yaml").read_text()


def _mount_of(doc: dict[str, Any], c: dict[str, Any], volume_kind: str) -> str:
    names = {v["name"] for v in pod_spec(doc)["volumes"] if volume_kind in v}
    return next(m["mountPath"] for m in c["volumeMounts"] if m["name"] in names)


def test_load_test_and_reports_paths_are_on_the_mounted_volumes() -> None:
    loadtest_files = kustomization()["configMapGenerator"][0]["files"]
    for name in ("goose-manager", "goose-worker"):
        doc = find("Job", name)
        c = pod_spec(doc)["containers"][0]
        mount = _mount_of(doc, c, "configMap")
        assert option_value(c["args"], "-f") == [f"{mount}/loadtest.py"] and "loadtest.py" in loadtest_files
    manager = find("Job", "goose-manager")
    c = container(manager, "manager")
    reports = _mount_of(manager, c, "persistentVolumeClaim")
    assert option_value(c["args"], "--report-file") and all(
        p.startswith(reports + "/") for p in option_value(c["args"], "--report-file")
    )
    # The claim is writable by the image's user.
    assert pod_spec(manager)["securityContext"]["fsGroup"] == pod_spec(manager)["securityContext"]["runAsUser"]


def test_urls_point_at_services_that_select_a_pod() -> None:
    manager = container(find("Job", "goose-manager"), "manager")
    urls = [option_value(manager["args"], "--host")[0], plain_env(manager)["GOOSE_REDIS_URL"]]
    urls.append(plain_env(container(find("Job", "goose-worker"), "worker"))["GOOSE_REDIS_URL"])
    for url in urls:
        parts = urlsplit(url)
        service = find("Service", str(parts.hostname))
        port = next(p for p in service["spec"]["ports"] if p["port"] == parts.port)
        deployments = [d for d in workloads() if d["kind"] == "Deployment"]
        backing = [
            d for d in deployments
            if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]  # fmt: skip
        assert len(backing) == 1, f"{url}: {len(backing)} Deployments behind Service {parts.hostname}"
        labels = backing[0]["spec"]["template"]["metadata"]["labels"]
        assert backing[0]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ports = [p for c in pod_spec(backing[0])["containers"] for p in c.get("ports", [])]
        assert any(p["name"] == port["targetPort"] or p["containerPort"] == port["targetPort"] for p in ports)
    assert urlsplit(urls[1]).port == 6379


def test_jobs_exit_policies() -> None:
    """Workers exit 0 when the run is over, so a Job (a Deployment would restart them);
    a Manager's own exit is the verdict, never retried; an evicted pod is tried again."""
    manager, workers = find("Job", "goose-manager"), find("Job", "goose-worker")
    assert manager["spec"]["completions"] == manager["spec"]["parallelism"] == 1
    assert manager["spec"]["backoffLimit"] <= 1
    for job, final in ((manager, {EXIT_ERROR, EXIT_INVALID, EXIT_INCOMPLETE, EXIT_FAILED, EXIT_INTERRUPTED}),
                       (workers, {EXIT_INVALID})):  # fmt: skip
        assert pod_spec(job)["restartPolicy"] == "Never"
        rules = job["spec"]["podFailurePolicy"]["rules"]
        fail = [r for r in rules if r["action"] == "FailJob"]
        assert set(fail[0]["onExitCodes"]["values"]) == final
        assert fail[0]["onExitCodes"]["containerName"] == pod_spec(job)["containers"][0]["name"]
        assert any(r["action"] == "Ignore" and r["onPodConditions"][0]["type"] == "DisruptionTarget" for r in rules)
        assert job["spec"]["activeDeadlineSeconds"] > 0
    assert not [d for d in workloads() if d["kind"] == "Deployment" and d["metadata"]["name"] == "goose-worker"]


def test_every_container_has_requests_and_limits() -> None:
    for doc in workloads():
        for c in pod_spec(doc)["containers"]:
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"]), c["name"]


# -- the commands, run --------------------------------------------------------------------


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOOSE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _local_args(args: list[str], reports: Path, host: str) -> list[str]:
    """A container's args with the pod's paths and Service names mapped onto this machine."""
    out = []
    for a in args:
        if a.startswith("/loadtest/"):
            a = str(K8S_DIR / a.removeprefix("/loadtest/"))
        elif a.startswith("/reports/"):
            a = str(reports / a.removeprefix("/reports/"))
        elif a == "http://target:8080":
            a = host
        out.append(a)
    return out


def _local_env(c: dict[str, Any], redis_url: str, secret: str) -> dict[str, str]:
    env = plain_env(c)
    assert env["GOOSE_REDIS_URL"] == "redis://redis:6379/0"
    env["GOOSE_REDIS_URL"] = redis_url
    env["GOOSE_GAGGLE_SECRET"] = secret  # the secretKeyRef, resolved
    return env


@pytest.mark.parametrize("job,name", [("goose-manager", "manager"), ("goose-worker", "worker")])
def test_job_commands_pass_the_cli_check(job: str, name: str, tmp_path: Path) -> None:
    c = container(find("Job", job), name)
    args = _local_args(c["args"], tmp_path, "http://127.0.0.1:8080") + ["--check"]
    env = _local_env(c, "redis://127.0.0.1:6379/0", "k8s-check-secret-0123456789abcdef")
    proc = subprocess.run(cli_command(args), capture_output=True, text=True, env=_clean_env(env), timeout=60)
    assert proc.returncode == 0, f"{args} {env}\n{proc.stderr}\n{proc.stdout}"


def _fetch_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the target did not listen on {port}:\n{log.read_text()}") from None
            time.sleep(0.1)


@pytest.mark.slow
def test_manifest_commands_run_a_gaggle_with_exact_totals(tmp_path: Path, redis_factory: Any, procs: Any) -> None:
    """Target, Manager and N Workers as the manifests start them, as processes on loopback."""
    server = redis_factory()
    reports = tmp_path / "reports"
    reports.mkdir()
    secret = secrets.token_hex(16)
    n = find("Job", "goose-worker")["spec"]["parallelism"]
    logs: dict[str, Path] = {}

    def start(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        logs[name] = tmp_path / f"{name}.log"
        with open(logs[name], "wb") as out:
            proc = subprocess.Popen(argv, env=_clean_env(env), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        procs.track(proc)
        return proc

    def all_logs() -> str:
        return "\n".join(f"--- {name} ---\n{path.read_text(errors='replace')}" for name, path in logs.items())

    # The demo target, on loopback instead of 0.0.0.0:8080.
    target_args = container(find("Deployment", "target"), "target")["args"]
    assert target_args[:1] == ["demo-site"] and option_value(target_args, "--bind") == ["0.0.0.0"]
    port = free_port()
    local_target = list(target_args)
    local_target[local_target.index("--bind") + 1] = "127.0.0.1"
    local_target[local_target.index("--port") + 1] = str(port)
    target = start("target", cli_command(local_target), {})
    _wait_listening(port, target, logs["target"])
    host = f"http://127.0.0.1:{port}"

    manager_c = container(find("Job", "goose-manager"), "manager")
    manager_env = _local_env(manager_c, server.url, secret)
    # Short and quick, as a user would shorten a trial run; everything else as in the manifest.
    manager_env.update(GOOSE_RUN_TIME="4s", GOOSE_HATCH_RATE="20")
    manager = start("manager", cli_command(_local_args(manager_c["args"], reports, host)), manager_env)
    worker_c = container(find("Job", "goose-worker"), "worker")
    workers = [
        start(f"worker-{i}", cli_command(_local_args(worker_c["args"], reports, host)),
              _local_env(worker_c, server.url, secret))
        for i in range(n)
    ]  # fmt: skip

    try:
        assert manager.wait(timeout=120) == 0, all_logs()
        assert [w.wait(timeout=60) for w in workers] == [0] * n, all_logs()
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the gaggle did not finish\n{all_logs()}") from None
    served = _fetch_json(f"{host}{HITS_PATH}")
    assert "Traceback" not in all_logs()

    report = json.loads((reports / "report.json").read_text())
    assert (reports / "report.html").is_file()
    assert report["mode"] == "gaggle" and report["users"] == int(manager_env["GOOSE_USERS"])
    assert report["verdict"]["exit_code"] == 0, report["verdict"]
    assert sorted(w["index"] for w in report["workers"]) == list(range(1, n + 1))
    assert all(w["state"] == "done" for w in report["workers"]), report["workers"]
    # No redirects in this load test: every request the site answered is one the Workers counted.
    assert set(served["statuses"]) == {"200"}, served
    merged = sum(w["all_requests"] for w in report["workers"])
    assert merged == served["total"] > 0, (merged, served)
    assert sum(w["all_failures"] for w in report["workers"]) == 0, report["errors"]
