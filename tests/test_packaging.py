"""``pip install .`` (not ``-e``), as the README advises for Worker hosts, gives a working
``goose-redis demo`` from any directory; and the demo's defaults fill every table.

The install goes into a fresh venv from a copy of the working tree (so the build leaves
nothing in the checkout); pip resolves the dependencies from its configured index.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from support import REPO_ROOT

from goose_redis.cli import DEMO_DEFAULTS, EXAMPLE_FILE

pytestmark = pytest.mark.slow


def test_the_example_users_read_is_the_one_the_demo_runs() -> None:
    assert EXAMPLE_FILE.is_relative_to(REPO_ROOT / "goose_redis")
    # One file: examples/drupal_loadtest.py (for users to read and copy) is a link to it.
    assert (REPO_ROOT / "examples" / "drupal_loadtest.py").resolve() == EXAMPLE_FILE.resolve()


def _tracked_tree(dest: Path) -> None:
    """The checkout's files as git sees them (tracked and new, not ignored), without build leftovers."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT,
                            capture_output=True, check=True, timeout=30).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, listed):
        src = REPO_ROOT / rel
        if src.is_file() and not rel.startswith(".venv"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def test_pip_install_without_e_runs_the_demo_from_anywhere(tmp_path: Path) -> None:
    src, env_dir, elsewhere = tmp_path / "src", tmp_path / "venv", tmp_path / "elsewhere"
    _tracked_tree(src)
    elsewhere.mkdir()
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True,
                             timeout=600, env=env)  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr

    where = subprocess.run([str(python), "-c", "import goose_redis; print(goose_redis.__file__)"], cwd=elsewhere,
                           capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert str(env_dir) in where.stdout, where.stdout + where.stderr  # the installed copy, not the checkout

    report = elsewhere / "demo.json"
    demo = [str(env_dir / "bin" / "goose-redis"), "demo", "-t", "3s", "-q", "--report-file", str(report)]
    done = subprocess.run(demo, cwd=elsewhere, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    for title in ("PER SCENARIO METRICS", "PER TRANSACTION METRICS", "PER REQUEST METRICS", "OVERVIEW"):
        assert f"=== {title} ===" in done.stdout
    data = json.loads(report.read_text())
    assert data["aggregated"]["count"] > 0 and data["aggregated"]["fail_count"] == 0, data["errors"]


def test_demo_defaults_fill_every_table(tmp_path: Path) -> None:
    """The default demo (no options): every scenario completes iterations, every transaction and
    request the example has shows up with counts (the on_start login in the ramp-up tables)."""
    report = tmp_path / "demo.json"
    done = subprocess.run([sys.executable, "-m", "goose_redis", "demo", "--report-file", str(report)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(report.read_text())
    assert (data["users"], data["run_time_s"]) == (int(DEMO_DEFAULTS["users"]), 15.0)
    assert [(s["name"], s["count"] > 0) for s in data["scenarios"]] == [("AnonBrowsingUser", True),
                                                                        ("AuthBrowsingUser", True)]  # fmt: skip
    every = {"(Anon) front page", "(Anon) node page", "(Anon) user page", "(Auth) front page", "(Auth) node page",
             "(Auth) user page", "(Auth) comment"}  # fmt: skip
    assert {t["name"] for t in data["transactions"] if t["count"] > 0} == every
    assert all(r["count"] > 0 for r in data["requests"]) and len(data["requests"]) >= 8
    assert data["aggregated"]["fail_count"] == 0, data["errors"]
    ramp = done.stdout.split("=== RAMP-UP METRICS ===", 1)[1].split("=== OVERVIEW ===", 1)[0]
    assert "(Auth) login" in ramp  # on_start: before the metrics reset
