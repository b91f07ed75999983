"""Report dict -> JSON: the dict as it is, the machine interface for CI (see docs/reports.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson


def render_json(report: Mapping[str, Any]) -> bytes:
    """Two-space indented UTF-8 JSON, keys in the dict's order, ending in a newline."""
    return orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
