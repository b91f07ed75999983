"""Exit codes, and the report's ``verdict``: what the process exits with, and why.

One place for every code a goose-redis process can exit with (docs/verdict.md), so the
run, the Manager, ``compare`` and the documentation agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .thresholds import Threshold, describe_failure, evaluate

EXIT_PASSED = 0  # the run passed (and every threshold, if any)
EXIT_ERROR = 1  # the run could not go on (Redis gone past its deadline, another Manager on the gaggle)
EXIT_INVALID = 2  # an invalid option, before anything started; compare: unreadable input
EXIT_INCOMPLETE = 3  # the run finished, but its merged totals are known incomplete (and no threshold was given)
EXIT_FAILED = 99  # a threshold failed (as k6), or incomplete totals with thresholds; compare: a regression
EXIT_INTERRUPTED = 130  # a second Ctrl-C: exit at once, without reports


def integrity_problems(report: Mapping[str, Any]) -> list[str] | None:
    """The problems of a merge known to be incomplete, or None when complete (or not said)."""
    integrity = report.get("integrity")
    if not isinstance(integrity, Mapping) or integrity.get("complete", True):
        return None
    problems = [str(p) for p in integrity.get("problems") or []]
    return problems or ["the merged totals are incomplete"]


def compute_verdict(
    results: Sequence[Mapping[str, Any]], report: Mapping[str, Any], aborted: str | None = None
) -> dict[str, Any]:
    """``{"passed", "exit_code", "reasons", "aborted"}`` from the threshold results and ``integrity``."""
    reasons = [describe_failure(r) for r in results if not r.get("passed")]
    if aborted:
        reasons.insert(0, f"the run was stopped early: {aborted}")
    failed = bool(reasons)
    problems = integrity_problems(report)
    if problems is not None:
        reasons += [f"incomplete: {p}" for p in problems]
    if failed or (problems is not None and results):
        code = EXIT_FAILED
    elif problems is not None:
        code = EXIT_INCOMPLETE
    else:
        code = EXIT_PASSED
    return {"passed": code == EXIT_PASSED, "exit_code": code, "reasons": reasons, "aborted": aborted}


def apply_verdict(report: dict[str, Any], thresholds: Sequence[Threshold], aborted: str | None = None) -> int:
    """Add ``thresholds`` and ``verdict`` to the final report; returns the exit code."""
    results = evaluate(thresholds, report)
    report["thresholds"] = results
    report["verdict"] = compute_verdict(results, report, aborted)
    return int(report["verdict"]["exit_code"])
