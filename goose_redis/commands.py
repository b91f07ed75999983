"""Control commands: the parts every side shares, without I/O.

A command is checked where it is typed (``goose-redis control``, the dashboard) with the
same parsers the Manager applies, so a typo never reaches Redis. While the run goes on a
command steers the shape from *now* (``gaggle/steering.steer``); before the start (a
Manager or a standalone run with ``--no-autostart``) it changes the options the run starts
with, as if they had been given on the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from .config import Config
from .errors import InvalidOption
from .gaggle.protocol import CONTROL_COMMANDS
from .gaggle.steering import bounded, parse_count, parse_rate, parse_time, steer
from .shape import MAX_PLAN_USERS, Shape, parse_plan

BARE = ("start", "stop")
EXAMPLES = {"users": "10", "hatch-rate": "2", "run-time": "5m", "throttle": "100", "test-plan": '"10,1m;10,5m;0,0s"'}


def check_command(command: str, value: str | None) -> str | None:
    """The value as it will be sent (stripped), or InvalidOption: one line, exit 2."""
    if command not in CONTROL_COMMANDS:
        raise InvalidOption("COMMAND", command, f"No such command: use one of {', '.join(CONTROL_COMMANDS)}.")
    if command in BARE:
        if value not in (None, ""):
            raise InvalidOption(command, value, f"The {command} command takes no value.")
        return None
    if value is None or not value.strip():
        raise InvalidOption(command, value or "", f"The {command} command needs a value, like {EXAMPLES[command]}.")
    value = value.strip()
    steer(Shape(), 0.0, command, value)  # the Manager's own parsers and bounds
    return value


@dataclass(frozen=True)
class Outcome:
    """What a command did: ``said`` is the one line its sender prints."""

    ok: bool
    said: str
    error: str | None = None  # "refused" (exit 1) or "invalid" (exit 2)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 2 if self.error == "invalid" else 1


def refused(said: str) -> Outcome:
    return Outcome(False, said, "refused")


def before_start(config: Config, command: str, value: str | None) -> tuple[Config, str]:
    """The options the run will start with after ``command`` (not ``start``/``stop``).

    Raises InvalidOption for a bad value, and ValueError (a refusal) for a command the
    run's kind cannot take before its start."""
    if command == "users":
        n = parse_count("users", value, 1, MAX_PLAN_USERS)
        config = replace(config, users=n, test_plan=None, test_plan_text=None)
        said = f"users -> {n} from the start"
    elif command == "hatch-rate":
        if config.arrival is not None:
            raise ValueError("an --arrival-rate run launches its users at once: it has no hatch rate")
        rate = parse_rate("hatch-rate", value)
        config = replace(config, hatch_rate=rate, startup_time_s=None)
        said = f"hatch rate -> {rate:g}/s from the start"
    elif command == "run-time":
        if config.test_plan is not None:
            raise ValueError("a test plan sets its own end: send test-plan with the steps you want")
        secs = parse_time("run-time", value)
        config = replace(config, run_time_s=secs, iterations=None)
        said = f"run time -> {secs:g}s after the users are launched"
    elif command == "throttle":
        rate = parse_rate("throttle", value)
        config = replace(config, throttle_rps=rate)
        said = f"throttle -> {rate:g} requests/s"
    elif command == "test-plan":
        if config.arrival is not None:
            raise ValueError("an --arrival-rate run has its own plan of rates, not of users")
        steps = parse_plan("test-plan", value or "")
        config = replace(config, test_plan=tuple(steps), test_plan_text=value, iterations=None)
        said = f"test plan -> {value} from the start"
    else:
        raise InvalidOption(command, value or "", f"The {command} command changes nothing before the start.")
    bounded(config.shape(), command, value)
    return config, said


def event(command: str, value: str | None, by: str, at: float, started_at: float | None) -> dict[str, Any]:
    """A report's ``events`` entry; ``at`` and ``started_at`` are local epoch seconds
    (``t`` is 0 for a command applied before the start)."""
    return {
        "t": round(max(0.0, at - started_at), 3) if started_at is not None else 0.0,
        "at": datetime.fromtimestamp(at, UTC).isoformat(),
        "command": command,
        "value": value,
        "by": by,
    }
