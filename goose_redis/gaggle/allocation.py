"""How the Manager splits users among Workers (pure)."""

from __future__ import annotations


def split_users(users: int, workers: int) -> list[int]:
    """Goose's rule: ``users // workers`` each, the first ``users % workers`` one more.

    It matches ``shape.Slot.of(k, workers)``: Worker ``k`` (0-based) runs gaggle users
    ``k, k + workers, ...``.
    """
    base, extra = divmod(users, workers)
    return [base + (1 if k < extra else 0) for k in range(workers)]


def describe_split(users: int, workers: int) -> list[str]:
    base, extra = divmod(users, workers)
    lines = [f"each worker to start {base} users"]
    if extra:
        lines.append(f"assigning 1 extra user to {extra} worker{'s' if extra > 1 else ''}")
    return lines
