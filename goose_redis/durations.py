"""Durations as Goose accepts them: ``30``, ``30s``, ``2m``, ``1h30m``, ``1.5s``."""

from __future__ import annotations

import re

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([hms]?)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> float:
    """Return seconds; raise ValueError with a reason a user can act on."""
    s = text.strip().lower()
    if not s:
        raise ValueError("empty duration")
    pos = 0
    total = 0.0
    units_seen: list[str] = []
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m:
            raise ValueError(f"cannot parse {text!r}: use forms like 30, 30s, 2m or 1h30m")
        unit = m.group(2)
        if unit == "" and m.end() != len(s) and s[m.end()].isalpha():
            raise ValueError(f"cannot parse {text!r}: unknown unit {s[m.end()]!r} (use h, m or s)")
        if unit == "" and m.end() != len(s):
            raise ValueError(f"cannot parse {text!r}: a bare number must stand alone")
        unit = unit or "s"  # a bare number counts seconds: "5s3" gives seconds twice
        if unit in units_seen:
            raise ValueError(f"cannot parse {text!r}: unit {unit!r} given twice")
        units_seen.append(unit)
        total += float(m.group(1)) * _UNIT_S[unit]
        pos = m.end()
    return total


def format_duration(seconds: float) -> str:
    """``95.0`` -> ``"00:01:35"``: how durations are shown in tables and progress lines."""
    whole = int(round(seconds))
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"
