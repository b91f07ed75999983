"""Command-line mistakes as the one error line: click's own usage errors, and Goose's flags
that have a goose-redis form of their own.

click prints a usage line, a hint and an error on three lines; a load tester's users read
errors in CI logs, so every mistake here becomes ``InvalidOption`` (one line, exit 2), the
shape that option validation in ``config.py`` already uses.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import click

from .errors import InvalidOption

REDIS_PORT = 6379


def _flat(text: str) -> str:
    return " ".join(text.split())


def _given_value(args: Sequence[str], param: click.Parameter | None) -> str:
    """The value the user gave ``param`` (last one wins, as in click), from argv or its environment variable."""
    if param is None:
        return ""
    opts = [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]
    value = None
    for i, arg in enumerate(args):
        for opt in opts:
            if arg == opt and i + 1 < len(args):
                value = args[i + 1]
            elif opt.startswith("--") and arg.startswith(opt + "="):
                value = arg[len(opt) + 1 :]
    if value is None:
        envvar = getattr(param, "envvar", None)
        names = [envvar] if isinstance(envvar, str) else list(envvar or [])
        value = next((os.environ[n] for n in names if n in os.environ), "")
    return value


def usage_error(exc: click.UsageError, args: Sequence[str]) -> InvalidOption:
    """click's ``UsageError`` (no such option, a missing value, a bad value) as ``InvalidOption``."""
    if isinstance(exc, click.NoSuchOption):
        detail = "No such option."
        hints = sorted(exc.possibilities or [])
        if len(hints) == 1:
            detail += f" Did you mean {hints[0]}?"
        elif hints:
            detail += f" Did you mean one of {', '.join(hints)}?"
        return InvalidOption(exc.option_name, "", detail + " (--help lists every option.)")
    if isinstance(exc, click.BadOptionUsage):
        message = exc.message
        if "requires an argument" in message:
            message = f"The {exc.option_name} option needs a value."
        return InvalidOption(exc.option_name, "", _flat(message))
    if isinstance(exc, click.BadParameter):
        param = exc.param
        name = (getattr(param, "opts", None) or [exc.param_hint or ""])[0] if param else str(exc.param_hint or "")
        if isinstance(exc, click.MissingParameter):
            return InvalidOption(str(name), "", _flat(exc.format_message()))
        return InvalidOption(str(name), _given_value(args, param), _flat(exc.message))
    return InvalidOption("", " ".join(args), _flat(exc.format_message()))


def goose_socket_flags(raw: Mapping[str, Any]) -> None:
    """Goose's ``--manager-host``/``--manager-port`` (Workers) and ``--manager-bind-host``/``--manager-bind-port``
    (Manager): answer with the ``--redis-url`` that does the job here, before anything starts."""
    host, port = raw.get("manager_host"), raw.get("manager_port")
    meet = "goose-redis Workers meet the Manager in Redis, not over a socket"
    if host is not None:
        where = "" if port is None else f" (the port is Redis's, {REDIS_PORT} by default, not --manager-port {port})"
        raise InvalidOption(
            "--manager-host", host,
            f"{meet}: use --redis-url redis://{host}:{REDIS_PORT}/0 if Redis runs on {host}{where}.",
        )  # fmt: skip
    if port is not None:
        raise InvalidOption(
            "--manager-port", port,
            f"{meet}: use --redis-url redis://REDIS-HOST:{REDIS_PORT}/0 (Redis's own port, not the Manager's).",
        )  # fmt: skip
    for key, flag in (("manager_bind_host", "--manager-bind-host"), ("manager_bind_port", "--manager-bind-port")):
        if raw.get(key) is not None:
            raise InvalidOption(
                flag, raw[key],
                "The goose-redis Manager listens on no socket: it and its Workers meet in Redis; "
                f"give the Manager and every Worker the same --redis-url redis://REDIS-HOST:{REDIS_PORT}/0.",
            )  # fmt: skip
