"""Load a load-test file and find its scenarios."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from .errors import InvalidOption
from .scenario import Scenario


def scenarios_of(module: ModuleType) -> list[Scenario]:
    """Every module-level Scenario, in definition order; or ``SCENARIOS`` if the file sets it."""
    explicit = getattr(module, "SCENARIOS", None)
    if explicit is not None:
        return list(explicit)
    seen: list[Scenario] = []
    for value in vars(module).values():
        if isinstance(value, Scenario) and all(value is not s for s in seen):
            seen.append(value)
    return seen


def load_file(path: str) -> list[Scenario]:
    file = Path(path)
    if not file.is_file():
        raise InvalidOption("--file", path, "The load-test file does not exist.")
    name = f"goose_loadtest_{abs(hash(str(file.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise InvalidOption("--file", path, "The load-test file can not be imported (is it a .py file?).")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SystemExit:
        raise
    except Exception as exc:
        raise InvalidOption(
            "--file", path, f"Importing the load-test file failed: {exc.__class__.__name__}: {exc}"
        ) from exc
    found = scenarios_of(module)
    if not found:
        raise InvalidOption("--file", path, "The load-test file defines no Scenario.")
    return found
