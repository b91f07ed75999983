"""Write the report dict to every ``--report-file``, the format chosen by extension."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from goose_redis.errors import InvalidOption
from goose_redis.report.csv_report import csv_paths, write_csv
from goose_redis.report.html import render_html
from goose_redis.report.json_report import render_json
from goose_redis.report.markdown import render_markdown

_FORMATS = {
    ".json": "json",
    ".html": "html",
    ".htm": "html",
    ".md": "md",
    ".markdown": "md",
    ".csv": "csv",
}


def report_format(path: str) -> str:
    """``"json"``, ``"html"``, ``"md"`` or ``"csv"`` from the file extension (any case)."""
    fmt = _FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise InvalidOption("--report-file", path, "unknown report format: use .json, .html, .md or .csv")
    return fmt


def report_files(path: str) -> list[str]:
    """The files a report path writes: itself, or five for a ``.csv`` path."""
    return list(csv_paths(path).values()) if report_format(path) == "csv" else [path]


def write_reports(report: Mapping[str, Any], paths: Iterable[str]) -> list[str]:
    """Write one report per path; returns every file written (a ``.csv`` path writes one file per table family).

    All paths are checked before anything is written, so a bad one leaves no partial output.
    """
    jobs = [(path, report_format(path)) for path in paths]
    written: list[str] = []
    for path, fmt in jobs:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            written += write_csv(report, path)
            continue
        if fmt == "json":
            Path(path).write_bytes(render_json(report))
        elif fmt == "html":
            Path(path).write_text(render_html(report), encoding="utf-8")
        else:
            Path(path).write_text(render_markdown(report), encoding="utf-8")
        written.append(path)
    return written
