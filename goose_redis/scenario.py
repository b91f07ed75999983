"""Scenarios and transactions: what a load test is, as pure data.

A user runs one scenario. One *iteration* of a scenario is a pass over its
transaction schedule: sequenced transactions first (lowest sequence first),
then the unsequenced ones, each appearing ``weight`` times and interleaved
round-robin, as Goose's default scheduler does. As in Goose, weights are reduced
by the gcd of *all* the scenario's transaction weights (not per group, which would
turn a lone sequenced transaction of weight 3 into one run). ``on_start`` and
``on_stop`` transactions run once each, in sequence order.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import TYPE_CHECKING, Any

import orjson

from .errors import InvalidOption

if TYPE_CHECKING:
    from .user import User

TransactionFunction = Callable[["User"], Awaitable[Any]]


@dataclass
class Transaction:
    function: TransactionFunction
    name: str | None = None
    weight: int = 1
    sequence: int | None = None
    on_start: bool = False
    on_stop: bool = False

    @property
    def display_name(self) -> str:
        return self.name or str(getattr(self.function, "__name__", "transaction"))


@dataclass
class Scenario:
    name: str
    weight: int = 1
    wait: tuple[float, float] | None = None
    host: str | None = None
    transactions: list[Transaction] = field(default_factory=list)

    def register(self, *transactions: Transaction) -> Scenario:
        self.transactions.extend(transactions)
        return self

    def transaction(
        self,
        name: str | None = None,
        *,
        weight: int = 1,
        sequence: int | None = None,
        on_start: bool = False,
        on_stop: bool = False,
    ) -> Callable[[TransactionFunction], TransactionFunction]:
        """Decorator form of ``register(Transaction(...))``."""

        def add(fn: TransactionFunction) -> TransactionFunction:
            self.transactions.append(Transaction(fn, name, weight, sequence, on_start, on_stop))
            return fn

        return add

    @property
    def machine_name(self) -> str:
        """Goose's machine name: lower case, letters and digits only."""
        return re.sub(r"[^a-z0-9]", "", self.name.lower())


@dataclass(frozen=True)
class PlannedScenario:
    """A validated scenario with its schedules resolved."""

    index: int
    scenario: Scenario
    on_start: tuple[int, ...]
    schedule: tuple[int, ...]
    on_stop: tuple[int, ...]


class LoadTest:
    """The validated, filtered set of scenarios a run executes."""

    def __init__(self, scenarios: Sequence[Scenario], all_scenarios: Sequence[Scenario] | None = None) -> None:
        self.scenarios = list(scenarios)
        # Before --scenarios filtered them: what a Worker must share with its Manager.
        self.all_scenarios = list(all_scenarios) if all_scenarios is not None else self.scenarios
        self.planned = [plan_scenario(i, s) for i, s in enumerate(self.scenarios)]
        self.user_slots = scenario_slots([s.weight for s in self.scenarios])

    def scenario_for_user(self, user_index: int) -> int:
        """Deterministic, so every Worker computes the same slots from counts alone."""
        return self.user_slots[user_index % len(self.user_slots)]

    def hosts(self) -> list[str | None]:
        return [s.host for s in self.scenarios]

    def describe(self) -> str:
        lines = []
        for s in self.scenarios:
            lines.append(f"{s.name} (machine name: {s.machine_name}, weight: {s.weight})")
            for t in s.transactions:
                flags = [f"weight: {t.weight}"]
                if t.sequence is not None:
                    flags.append(f"sequence: {t.sequence}")
                if t.on_start:
                    flags.append("on_start")
                if t.on_stop:
                    flags.append("on_stop")
                lines.append(f"  - {t.display_name} ({', '.join(flags)})")
        return "\n".join(lines)

    def hash(self) -> str:
        return _hash(self.scenarios)

    def full_hash(self) -> str:
        return _hash(self.all_scenarios)


def _hash(scenarios: Sequence[Scenario]) -> str:
    """What a Worker must share with its Manager: names, weights, sequences, hosts,
    waits; not function bodies (as Goose)."""
    shape = [
        [
            s.name,
            s.weight,
            list(s.wait) if s.wait else None,
            s.host,
            [[t.display_name, t.weight, t.sequence, t.on_start, t.on_stop] for t in s.transactions],
        ]
        for s in scenarios
    ]
    return hashlib.sha256(orjson.dumps(shape)).hexdigest()[:16]


# A schedule holds each transaction ``weight`` times (after the gcd): a typo like 10**9
# would exhaust memory before the first request. Far above any useful ratio.
MAX_WEIGHT = 100_000
MAX_WAIT_S = 30 * 86400.0  # as every duration option (validate.MAX_DURATION_S)


def _weight_ok(weight: object) -> bool:
    return isinstance(weight, int) and not isinstance(weight, bool) and 1 <= weight <= MAX_WEIGHT


def _wait_ok(wait: object) -> bool:
    if not isinstance(wait, tuple | list) or len(wait) != 2:
        return False
    if not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in wait):
        return False
    return bool(0 <= wait[0] <= wait[1] <= MAX_WAIT_S)


def _validate(scenario: Scenario) -> None:
    label = f"scenario {scenario.name!r}"
    if not _weight_ok(scenario.weight):
        raise InvalidOption(
            "scenario weight", scenario.weight, f"{label} must have a weight of at least 1 (at most {MAX_WEIGHT})"
        )
    if not scenario.transactions:
        raise InvalidOption("scenario", scenario.name, f"{label} has no transactions")
    if scenario.wait is not None and not _wait_ok(scenario.wait):
        raise InvalidOption(
            "scenario wait", scenario.wait, f"{label} needs wait=(min, max) seconds with 0 <= min <= max <= 30 days"
        )
    for t in scenario.transactions:
        if not _weight_ok(t.weight):
            raise InvalidOption(
                "transaction weight",
                t.weight,
                f"transaction {t.display_name!r} of {label} must have a weight of at least 1 (at most {MAX_WEIGHT})",
            )


def plan_scenario(index: int, scenario: Scenario) -> PlannedScenario:
    _validate(scenario)
    txs = scenario.transactions
    starts = [i for i, t in enumerate(txs) if t.on_start]
    stops = [i for i, t in enumerate(txs) if t.on_stop]
    regular = [i for i, t in enumerate(txs) if not t.on_start and not t.on_stop]

    g = reduce(math.gcd, [t.weight for t in txs])

    def schedule_of(ids: list[int], weighted: bool = True) -> list[int]:
        # Each sequence group in turn, lowest first, then the unsequenced; weights reduced by
        # the scenario-wide gcd, so they keep their meaning across groups.
        out: list[int] = []
        sequences = sorted({seq for i in ids if (seq := txs[i].sequence) is not None})
        groups = [[i for i in ids if txs[i].sequence == seq] for seq in sequences]
        groups.append([i for i in ids if txs[i].sequence is None])
        for group in groups:
            weights = [txs[i].weight // g if weighted else 1 for i in group]
            out.extend(round_robin(group, weights, reduce_by_gcd=False))
        return out

    schedule = schedule_of(regular)
    if not schedule and not starts and not stops:
        raise InvalidOption("scenario", scenario.name, f"scenario {scenario.name!r} has no transactions")
    on_start, on_stop = schedule_of(starts, weighted=False), schedule_of(stops, weighted=False)
    return PlannedScenario(index, scenario, tuple(on_start), tuple(schedule), tuple(on_stop))


def round_robin(ids: Sequence[int], weights: Sequence[int], *, reduce_by_gcd: bool = True) -> list[int]:
    """Interleave ids, each ``weight / gcd`` times: [a,b,a,b,a] for weights 3:2."""
    if not ids:
        return []
    g = reduce(math.gcd, weights) if reduce_by_gcd else 1
    left = [w // g for w in weights]
    out: list[int] = []
    while any(left):
        for pos, i in enumerate(ids):
            if left[pos]:
                out.append(i)
                left[pos] -= 1
    return out


def scenario_slots(weights: Sequence[int]) -> list[int]:
    """Scenario index per user slot, weights reduced and interleaved."""
    return round_robin(list(range(len(weights))), weights)


def filter_scenarios(scenarios: Sequence[Scenario], spec: str | None) -> list[Scenario]:
    """``--scenarios a,b*``: match machine names, ``*`` as a wildcard."""
    if not spec:
        return list(scenarios)
    patterns = [p.strip().lower() for p in spec.split(",") if p.strip()]
    if not patterns:  # "," would select nothing, and a run without scenarios cannot assign users
        raise InvalidOption("--scenarios", spec, "The --scenarios option names no scenario: give machine names, a,b*.")
    chosen = [s for s in scenarios if any(fnmatch.fnmatchcase(s.machine_name, p) for p in patterns)]
    for p in patterns:
        if not any(fnmatch.fnmatchcase(s.machine_name, p) for s in scenarios):
            known = ", ".join(s.machine_name for s in scenarios)
            raise InvalidOption("--scenarios", spec, f"no scenario matches {p!r} (known: {known})")
    return chosen
