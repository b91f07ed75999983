"""compose.yaml and docker/Dockerfile, checked with the real Compose and the real CLI.

No Docker engine is needed: `compose config` only parses, validates and interpolates.
CI installs Compose with `apt-get install -y docker-compose` (Debian's v1); a v2
`docker compose` plugin is used instead when present.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from support.compose import (
    COMPOSE_FILE,
    REPO_ROOT,
    ComposeTool,
    ServiceSpec,
    dockerfile_entrypoint,
    find_compose,
    services,
)

DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
OUR_SERVICES = ("target", "manager", "worker")
# Where the image and compose.yaml put things, and where they are in this checkout.
CONTAINER_EXAMPLES = "/app/examples/"
CONTAINER_REPORTS = "/reports/"


@pytest.fixture(scope="module")
def tool() -> ComposeTool:
    found = find_compose()
    if found is None:
        pytest.skip("no Compose implementation: apt-get install -y docker-compose (or the v2 plugin)")
    return found


@pytest.fixture(scope="module")
def default_services(tool: ComposeTool) -> dict[str, ServiceSpec]:
    return services({}, tool=tool)


def _cli_argv() -> list[str]:
    script = Path(sys.executable).with_name("goose-redis")
    return [str(script)] if script.exists() else [sys.executable, "-m", "goose_redis"]


def _run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The outer GOOSE_* must not leak in: the service's environment is the whole story.
    base = {k: v for k, v in os.environ.items() if not k.startswith("GOOSE_")}
    base.update(env)
    return subprocess.run([*_cli_argv(), *args], capture_output=True, text=True, env=base, timeout=60)


def _local_args(argv: list[str], reports: Path) -> list[str]:
    """A container's args with the image's paths mapped onto this checkout."""
    out = []
    for arg in argv:
        if arg.startswith(CONTAINER_EXAMPLES):
            arg = str(REPO_ROOT / "examples" / arg[len(CONTAINER_EXAMPLES) :])
        elif arg.startswith(CONTAINER_REPORTS):
            arg = str(reports / arg[len(CONTAINER_REPORTS) :])
        out.append(arg)
    return out


def _option_value(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == option]


# -- (a) the real compose accepts the file --------------------------------------------------


def test_compose_config_accepts_file(default_services: dict[str, ServiceSpec]) -> None:
    assert set(default_services) == {"redis", "target", "manager", "worker"}


def test_our_services_share_one_image_built_from_the_dockerfile(
    default_services: dict[str, ServiceSpec],
) -> None:
    images = {default_services[name].raw.get("image") for name in OUR_SERVICES}
    assert len(images) == 1 and None not in images, images
    for name in OUR_SERVICES:
        build = default_services[name].raw["build"]
        assert Path(build["context"]).resolve() == REPO_ROOT
        assert build["dockerfile"] == "docker/Dockerfile"
        assert default_services[name].argv[0] == "goose-redis"


def test_redis_is_healthchecked_and_gates_manager_and_worker(
    default_services: dict[str, ServiceSpec],
) -> None:
    redis = default_services["redis"].raw
    assert redis["image"] == "redis:7-alpine"
    assert "redis-cli" in redis["healthcheck"]["test"] and "ping" in redis["healthcheck"]["test"]
    manager_deps = default_services["manager"].raw["depends_on"]
    assert manager_deps["redis"]["condition"] == "service_healthy"
    assert manager_deps["target"]["condition"] == "service_started"
    assert default_services["worker"].raw["depends_on"]["redis"]["condition"] == "service_healthy"


def test_worker_can_be_scaled(default_services: dict[str, ServiceSpec]) -> None:
    worker = default_services["worker"].raw
    assert "container_name" not in worker
    assert not worker.get("ports")


def test_manager_writes_reports_to_the_mounted_dir(default_services: dict[str, ServiceSpec]) -> None:
    manager = default_services["manager"]
    volumes = manager.raw["volumes"]
    # v1 prints "host:container:mode" strings, v2 prints long-form dicts.
    targets = [v.split(":")[1] if isinstance(v, str) else v["target"] for v in volumes]
    assert "/reports" in targets
    assert _option_value(manager.argv, "--report-file") == ["/reports/report.json", "/reports/report.html"]
    assert _option_value(manager.argv, "--host") == ["http://target:8080"]


def test_target_serves_the_demo_site(default_services: dict[str, ServiceSpec]) -> None:
    assert default_services["target"].argv == [
        "goose-redis",
        "demo-site",
        "--bind",
        "0.0.0.0",
        "--port",
        "8080",
    ]


# -- (b) the commands, with the defaults applied, pass the CLI's own validation --------------


@pytest.mark.parametrize("service", ["manager", "worker"])
def test_service_command_passes_cli_check(
    default_services: dict[str, ServiceSpec], service: str, tmp_path: Path
) -> None:
    spec = default_services[service]
    assert spec.argv[0] == "goose-redis"
    args = _local_args(spec.argv[1:], tmp_path) + ["--check"]
    proc = _run_cli(args, spec.environment)
    assert proc.returncode == 0, (
        f"{service}: goose-redis {shlex.join(args)} with env {spec.environment} "
        f"exited {proc.returncode}\n--- stderr ---\n{proc.stderr}\n--- stdout ---\n{proc.stdout}"
    )


@pytest.mark.parametrize("service", ["manager", "worker"])
def test_service_environment_names_real_options(
    default_services: dict[str, ServiceSpec], service: str
) -> None:
    """A misspelt GOOSE_ variable would be ignored silently; each must name a CLI option."""
    proc = _run_cli(["--help"], {})
    assert proc.returncode == 0, proc.stderr
    for key in default_services[service].environment:
        assert key.startswith("GOOSE_"), key
        option = "--" + key.removeprefix("GOOSE_").lower().replace("_", "-")
        assert option in proc.stdout, f"{key}: no {option} in goose-redis --help\n{proc.stdout}"


# -- (c) host environment knobs ----------------------------------------------------------------


def test_defaults(default_services: dict[str, ServiceSpec]) -> None:
    manager = default_services["manager"]
    assert _option_value(manager.argv, "--expect-workers") == ["2"]
    assert manager.environment["GOOSE_USERS"] == "8"
    assert manager.environment["GOOSE_HATCH_RATE"] == "4"
    assert manager.environment["GOOSE_RUN_TIME"] == "30s"
    assert manager.environment["GOOSE_REDIS_URL"] == "redis://redis:6379/0"
    assert default_services["worker"].environment["GOOSE_REDIS_URL"] == "redis://redis:6379/0"


def test_expect_workers_from_environment(tool: ComposeTool) -> None:
    manager = services({"EXPECT_WORKERS": "4"}, tool=tool)["manager"]
    assert _option_value(manager.argv, "--expect-workers") == ["4"]


def test_load_knobs_from_environment(tool: ComposeTool) -> None:
    env = {"USERS": "3", "HATCH_RATE": "1.5", "RUN_TIME": "2m", "REDIS_URL": "redis://10.0.0.5:6380/1"}
    got = services(env, tool=tool)
    assert got["manager"].environment["GOOSE_USERS"] == "3"
    assert got["manager"].environment["GOOSE_HATCH_RATE"] == "1.5"
    assert got["manager"].environment["GOOSE_RUN_TIME"] == "2m"
    assert got["worker"].environment["GOOSE_REDIS_URL"] == "redis://10.0.0.5:6380/1"
    # The manager always uses the Redis beside it.
    assert got["manager"].environment["GOOSE_REDIS_URL"] == "redis://redis:6379/0"


# -- the gaggle secret, from an env file -------------------------------------------------------

ENV_EXAMPLE = REPO_ROOT / "goose.env.example"


def _env_file(tmp_path: Path, secret: str) -> Path:
    """goose.env as the docs make it: the committed template with the secret filled in."""
    text = ENV_EXAMPLE.read_text()
    assert "\nGOOSE_GAGGLE_SECRET=change-me\n" in text
    path = tmp_path / "goose.env"
    path.write_text(text.replace("\nGOOSE_GAGGLE_SECRET=change-me\n", f"\nGOOSE_GAGGLE_SECRET={secret}\n"))
    return path


def test_the_secret_reaches_manager_and_workers_from_an_env_file(tool: ComposeTool, tmp_path: Path) -> None:
    secret = "0123456789abcdef" * 4
    got = services({}, tool=tool, env_file=_env_file(tmp_path, secret))
    assert got["manager"].environment["GOOSE_GAGGLE_SECRET"] == secret
    assert got["worker"].environment["GOOSE_GAGGLE_SECRET"] == secret
    for name in ("manager", "worker"):  # and the CLI takes it
        args = _local_args(got[name].argv[1:], tmp_path) + ["--check"]
        proc = _run_cli(args, got[name].environment)
        assert proc.returncode == 0, proc.stderr
        assert secret not in proc.stdout + proc.stderr


def test_without_an_env_file_the_secret_is_not_set(default_services: dict[str, ServiceSpec]) -> None:
    for name in ("manager", "worker"):
        assert "GOOSE_GAGGLE_SECRET" not in default_services[name].environment
        assert "GOOSE_GAGGLE_SECRET" in default_services[name].raw["environment"]  # passed by name


def test_the_template_alone_refuses_to_start(tool: ComposeTool, tmp_path: Path) -> None:
    """Used as it is, goose.env.example's placeholder is too short: the run stops before it
    starts, rather than run with a secret everybody knows (or silently with none)."""
    spec = services({}, tool=tool, env_file=ENV_EXAMPLE)["worker"]
    assert spec.environment["GOOSE_GAGGLE_SECRET"] == "change-me"
    proc = _run_cli([*_local_args(spec.argv[1:], tmp_path), "--check"], spec.environment)
    assert proc.returncode == 2, proc.stderr
    assert 'option: "--gaggle-secret", value: "***"' in proc.stderr and "(it has 9)" in proc.stderr
    assert "change-me" not in proc.stderr


def test_the_env_file_stays_out_of_git_and_images() -> None:
    for ignore in (".gitignore", ".dockerignore"):
        lines = {line.strip() for line in (REPO_ROOT / ignore).read_text().splitlines()}
        assert "goose.env" in lines, ignore
    assert ENV_EXAMPLE.is_file()


# -- the image ------------------------------------------------------------------------------


def test_dockerfile_entrypoint_and_user() -> None:
    assert dockerfile_entrypoint(DOCKERFILE) == ["goose-redis"]
    text = DOCKERFILE.read_text()
    assert "FROM python:3.11-slim" in text
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert "pip install --no-cache-dir" in text
    assert "/app/examples" in text


def test_dockerignore_keeps_what_the_image_needs() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", "venv", ".venv", "reports", "**/__pycache__"} <= patterns
    assert not patterns & {"goose_redis", "examples", "pyproject.toml", "README.md", "*", "**"}


def test_compose_file_is_at_the_repo_root() -> None:
    assert COMPOSE_FILE == REPO_ROOT / "compose.yaml" and COMPOSE_FILE.is_file()
