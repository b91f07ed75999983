"""Ask the real Compose implementation what compose.yaml means.

`docker compose config` (v2) and `docker-compose config` (v1, Debian's package) both
validate a file and print it normalised, with `${VAR:-default}` interpolated, and
neither needs a Docker engine. v2 can print JSON; v1 only prints YAML.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "compose.yaml"

# Only these reach compose from the outer environment, so a developer's USERS or
# COMPOSE_FILE cannot change what a test sees.
_PASSTHROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


class ComposeError(RuntimeError):
    """The compose tool rejected the file; the message carries its stderr."""


@dataclass(frozen=True)
class ComposeTool:
    argv: tuple[str, ...]  # ("docker", "compose") or ("docker-compose",)
    version: str

    @property
    def major(self) -> int:
        match = re.match(r"v?(\d+)", self.version)
        return int(match.group(1)) if match else 0

    @property
    def json_output(self) -> bool:
        return self.major >= 2


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    argv: list[str]  # entrypoint + command, as the container would exec it
    environment: dict[str, str]
    raw: dict[str, Any] = field(repr=False)


def _version_of(argv: tuple[str, ...]) -> str | None:
    try:
        proc = subprocess.run([*argv, "version", "--short"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    out = proc.stdout.strip()
    return out.splitlines()[0].strip() if out else None


def find_compose() -> ComposeTool | None:
    """The first working Compose implementation: the v2 plugin, else `docker-compose`."""
    candidates: list[tuple[str, ...]] = []
    if shutil.which("docker"):
        candidates.append(("docker", "compose"))
    if shutil.which("docker-compose"):
        candidates.append(("docker-compose",))
    for argv in candidates:
        version = _version_of(argv)
        if version:
            return ComposeTool(argv, version)
    return None


def _clean_env(env: Mapping[str, str] | None) -> dict[str, str]:
    base = {k: os.environ[k] for k in _PASSTHROUGH if k in os.environ}
    base.update(env or {})
    return base


def compose_config(
    env: Mapping[str, str] | None = None,
    compose_file: Path = COMPOSE_FILE,
    tool: ComposeTool | None = None,
    env_file: Path | None = None,
) -> dict[str, Any]:
    """The normalised compose document for `compose_file` under exactly `env`, and the
    variables of `env_file` (`--env-file`; none by default).

    Raises LookupError when no compose implementation is installed and ComposeError
    when the tool rejects the file.
    """
    tool = tool or find_compose()
    if tool is None:
        raise LookupError("no compose implementation (docker compose v2 or docker-compose)")
    # An empty --env-file so a stray .env (or goose.env) beside compose.yaml cannot leak in.
    with tempfile.NamedTemporaryFile("w", suffix=".env") as empty_env:
        argv = [*tool.argv, "--env-file", str(env_file or empty_env.name), "-f", str(compose_file), "config"]
        if tool.json_output:
            argv += ["--format", "json"]
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=_clean_env(env), cwd=compose_file.parent, timeout=60
        )
    if proc.returncode != 0:
        raise ComposeError(
            f"{shlex.join(argv)} exited {proc.returncode}\n--- stderr ---\n{proc.stderr}"
            f"\n--- stdout ---\n{proc.stdout}"
        )
    if tool.json_output:
        doc = json.loads(proc.stdout)
    else:
        import yaml  # test-only dependency; v1 cannot print JSON

        doc = yaml.safe_load(proc.stdout)
    if not isinstance(doc, dict):
        raise ComposeError(f"unexpected config output: {proc.stdout[:500]!r}")
    return doc


def _as_args(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def _as_env(value: Any) -> dict[str, str]:
    if not value:
        return {}
    if isinstance(value, dict):
        # A bare `- NAME` (value taken from the caller) comes out as null: absent here.
        return {str(k): str(v) for k, v in value.items() if v is not None}
    out: dict[str, str] = {}
    for item in value:
        key, sep, val = str(item).partition("=")
        if sep:
            out[key] = val
    return out


def _join_continuations(text: str) -> list[str]:
    lines: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def dockerfile_entrypoint(dockerfile: Path) -> list[str]:
    """ENTRYPOINT of the last stage of `dockerfile` (exec or shell form), [] if none."""
    entrypoint: list[str] = []
    for line in _join_continuations(dockerfile.read_text()):
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            entrypoint = []
        elif word.upper() == "ENTRYPOINT":
            rest = rest.strip()
            if rest.startswith("["):
                entrypoint = [str(v) for v in json.loads(rest)]
            else:
                entrypoint = ["/bin/sh", "-c", rest]
    return entrypoint


def _entrypoint(service: dict[str, Any], project_dir: Path) -> list[str]:
    if service.get("entrypoint") is not None:
        return _as_args(service["entrypoint"])
    build = service.get("build")
    if isinstance(build, str):
        build = {"context": build}
    if isinstance(build, dict):
        context = project_dir / str(build.get("context", "."))
        dockerfile = context / str(build.get("dockerfile", "Dockerfile"))
        if dockerfile.is_file():
            return dockerfile_entrypoint(dockerfile)
    return []  # a pulled image: its entrypoint is not knowable without the engine


def services(
    env: Mapping[str, str] | None = None,
    compose_file: Path = COMPOSE_FILE,
    tool: ComposeTool | None = None,
    env_file: Path | None = None,
) -> dict[str, ServiceSpec]:
    """Every service of `compose_file` under `env`: argv (entrypoint + command) and environment."""
    doc = compose_config(env, compose_file, tool, env_file)
    out: dict[str, ServiceSpec] = {}
    for name, service in (doc.get("services") or {}).items():
        argv = _entrypoint(service, compose_file.parent) + _as_args(service.get("command"))
        out[name] = ServiceSpec(name, argv, _as_env(service.get("environment")), service)
    return out
