"""The shaping options: --test-plan, --arrival-rate, --throttle-requests, --co-mitigation.

Their own values and their conflicts with the plain ``-u/-r/-s/-t`` options,
checked before anything starts (``config.build_config`` calls ``read_shaping``).
The shape itself is built in ``Config.shape``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .arrival import ArrivalPlan, parse_arrival
from .co import MODES as CO_MODES
from .errors import InvalidOption
from .shape import parse_plan
from .validate import positive_number

# Options a test plan replaces (Goose: --test-plan "can not be set together with" them).
PLAN_REPLACES = {
    "users": "--users",
    "hatch_rate": "--hatch-rate",
    "startup_time": "--startup-time",
    "run_time": "--run-time",
    "iterations": "--iterations",
}
# The open model launches its pool at once and runs iterations by the clock, not per user.
ARRIVAL_EXCLUDES = {
    "test_plan": "--test-plan",
    "hatch_rate": "--hatch-rate",
    "startup_time": "--startup-time",
    "iterations": "--iterations",
}
MAX_THROTTLE = 1_000_000.0


@dataclass(frozen=True)
class Shaping:
    test_plan: tuple[tuple[float, float], ...] | None = None
    throttle: float | None = None
    co_mitigation: str = "disabled"

    @property
    def plan_peak(self) -> int | None:
        return max(1, max(int(u) for u, _ in self.test_plan)) if self.test_plan else None


def read_shaping(raw: dict[str, Any]) -> Shaping:
    plan_text = raw.get("test_plan")
    test_plan = None
    if plan_text is not None:
        for key, option in PLAN_REPLACES.items():
            if raw.get(key) is not None:
                raise InvalidOption(
                    "--test-plan", plan_text, f"The --test-plan option can not be set together with {option}."
                )
        test_plan = tuple(parse_plan("--test-plan", plan_text))
    arrival = raw.get("arrival_rate")
    if arrival is not None:
        for key, option in ARRIVAL_EXCLUDES.items():
            if raw.get(key) is not None:
                raise InvalidOption(
                    "--arrival-rate", arrival, f"The --arrival-rate option can not be set together with {option}."
                )
        if ("," in str(arrival) or ";" in str(arrival)) and raw.get("run_time") is not None:
            raise InvalidOption(
                "--arrival-rate", arrival,
                "A rate plan sets its own length: the --arrival-rate plan can not be set together with --run-time.",
            )  # fmt: skip
    throttle = raw.get("throttle_requests")
    rate = positive_number("--throttle-requests", throttle, MAX_THROTTLE) if throttle is not None else None
    co = raw.get("co_mitigation")
    mode = "disabled"
    if co is not None:
        mode = str(co).strip().lower()
        if mode not in CO_MODES:
            raise InvalidOption(
                "--co-mitigation", co, f"The --co-mitigation option must be one of: {', '.join(CO_MODES)}."
            )
    return Shaping(test_plan, rate, mode)


def read_arrival(raw: dict[str, Any], run_time_s: float | None) -> ArrivalPlan | None:
    text = raw.get("arrival_rate")
    return parse_arrival("--arrival-rate", text, run_time_s) if text is not None else None
