"""One validator per kind of option value: numbers, durations, URLs, names.

Each takes the option as the user typed it and the raw value, and returns the
parsed value or raises ``InvalidOption`` naming the option and saying what is
wanted. No network, no writes: ``config.build_config`` runs these before
anything starts, and ``goose-redis status`` shares them.

The bounds keep every later step away from overflows and hangs: timers and
dates stay far from their limits, orjson stays within 64-bit integers, and a
typo like ``-u 1000000000`` fails here instead of after exhausting memory.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from urllib.parse import parse_qsl, urlsplit

import yarl

from .durations import parse_duration
from .errors import InvalidOption
from .gaggle.keys import XREAD_BLOCK_MS

MAX_DURATION_S = 30 * 86400.0  # 30 days: longer than any load test, far from any timer limit
MAX_USERS = 1_000_000  # the launch plan is in memory on every process; each user is an HTTP session
MAX_ITERATIONS = 1_000_000_000  # a Manager sends it in JSON: stays a 64-bit integer
MAX_RATE = 1_000_000.0  # users per second; beyond this every user starts at once anyway
MAX_PORT = 65535
MAX_DB = 2**31 - 1  # Redis parses SELECT's index as a C int
MAX_GAGGLE_LEN = 64
MAX_PROCESSES = 256  # child processes of one run on one host: each holds a loop, a pool and a pipe

_WHOLE = re.compile(r"[0-9]{1,18}")
_DECIMAL = re.compile(r"[0-9]{1,18}(\.[0-9]{1,18})?|\.[0-9]{1,18}")
_GAGGLE = re.compile(r"[A-Za-z0-9._-]+")
# Letters, digits, '-' (not first or last) and '_' (compose service names have it).
_HOST_LABEL = re.compile(r"(?!-)[\w-]+(?<!-)")


def _days(seconds: float) -> str:
    return f"{seconds / 86400:.0f} days" if seconds >= 86400 else f"{seconds:.0f}s"


def whole_number(option: str, raw: object, minimum: int, maximum: int) -> int:
    """A plain decimal integer (no sign, no ``1e3``, no ``1_000``) within [minimum, maximum]."""
    text = str(raw).strip()
    if not _WHOLE.fullmatch(text):
        if re.fullmatch(r"-[0-9]+", text):
            raise InvalidOption(option, raw, f"The {option} option must be set to at least {minimum}.")
        if re.fullmatch(r"[0-9]{19,}", text):
            raise InvalidOption(option, raw, f"The {option} option can be at most {maximum}.")
        raise InvalidOption(option, raw, f"The {option} option must be a whole number, like {max(minimum, 1) * 10}.")
    value = int(text)
    if value < minimum:
        raise InvalidOption(option, raw, f"The {option} option must be set to at least {minimum}.")
    if value > maximum:
        raise InvalidOption(option, raw, f"The {option} option can be at most {maximum}.")
    return value


def usable_cores() -> int:
    """Cores this process may run on (``taskset``, cgroup cpusets), not all the host has."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def processes(option: str, raw: object) -> int:
    """``--processes N|auto``: ``auto`` is one process per usable core."""
    text = str(raw).strip()
    if text.lower() == "auto":
        return min(usable_cores(), MAX_PROCESSES)
    if not _WHOLE.fullmatch(text) and not re.fullmatch(r"-?[0-9]+", text):
        raise InvalidOption(option, raw, f"The {option} option must be a whole number, like 2, or auto.")
    return whole_number(option, raw, 1, MAX_PROCESSES)


def positive_number(option: str, raw: object, maximum: float) -> float:
    """A plain decimal number (``2``, ``0.5``) greater than 0 and at most ``maximum``."""
    text = str(raw).strip()
    if not _DECIMAL.fullmatch(text):
        raise InvalidOption(
            option, raw, f"The {option} option must be a number greater than 0, like 2 or 0.5 (plain decimals)."
        )
    value = float(text)
    if not value > 0:
        raise InvalidOption(option, raw, f"The {option} option must be greater than 0.")
    if value > maximum:
        raise InvalidOption(option, raw, f"The {option} option can be at most {maximum:.0f}.")
    return value


def duration(option: str, raw: object, allow_zero: bool = False, maximum: float = MAX_DURATION_S) -> float:
    """``30``, ``30s``, ``2m``, ``1h30m``: seconds, more than 0 (or 0 when allowed), at most ``maximum``."""
    try:
        value = parse_duration(str(raw))
    except ValueError as exc:
        raise InvalidOption(option, raw, f"The {option} option is not a duration: {exc}.") from None
    if not math.isfinite(value) or value > maximum:
        raise InvalidOption(option, raw, f"The {option} option can be at most {_days(maximum)}.")
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidOption(option, raw, f"The {option} option must be longer than 0 seconds.")
    return value


def check_ramp(users: int, hatch_rate: float | None, raw: object) -> None:
    """The last user starts at ``(users - 1) / hatch_rate``: that must come within the duration bound."""
    if hatch_rate is None or users < 2:
        return
    ramp = (users - 1) / hatch_rate
    if ramp > MAX_DURATION_S:
        raise InvalidOption(
            "--hatch-rate",
            raw,
            f"At {hatch_rate:g} users per second the last of {users} users would start after "
            f"{_days(ramp)}; the ramp-up can be at most {_days(MAX_DURATION_S)}: raise --hatch-rate.",
        )


def gaggle_name(raw: object) -> str:
    """Part of every Redis key (``goose:{gaggle}:...``): no ':' or '*' that would clash with key patterns."""
    name = str(raw)
    if not _GAGGLE.fullmatch(name) or len(name) > MAX_GAGGLE_LEN:
        raise InvalidOption(
            "--gaggle",
            name,
            f"The gaggle name must be 1 to {MAX_GAGGLE_LEN} letters, digits, '-', '_' or '.' "
            "(it is part of every Redis key).",
        )
    return name


def _no_blanks(option: str, value: str, shown: str) -> None:
    if not value:
        raise InvalidOption(option, shown, f"The {option} option is empty.")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidOption(option, shown, f"The {option} option contains a space or a control character.")


def _host_port(
    option: str, shown: str, netloc: str, what: str, password_only: bool = False
) -> tuple[str, str, int | None]:
    """Split ``[user[:password]@]host[:port]``; check the host and the port (1..65535).

    Redis takes a password without a user (``redis://:secret@host``); HTTP does not
    (aiohttp would silently drop it), so that is allowed only with ``password_only``."""
    userinfo, _, hostport = netloc.rpartition("@")
    port_text: str | None
    user, colon, password = userinfo.partition(":")
    if password_only and not user and colon and password:
        pass
    elif "@" in netloc and not user:
        raise InvalidOption(option, shown, f"The {what} has a password or '@' without a user name before it.")
    if hostport.startswith("["):
        inner, bracket, port_text = hostport[1:].partition("]")
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise InvalidOption(option, shown, f"The {what} has an invalid IPv6 address [{inner}].") from None
        if not bracket or (port_text and not port_text.startswith(":")):
            raise InvalidOption(option, shown, f"The {what} has an invalid IPv6 address: write it as [::1]:8080.")
        host, port_text = inner, (port_text[1:] if port_text else None)
    else:
        host, colon, rest = hostport.partition(":")
        port_text = rest if colon else None
        if ":" in rest:
            raise InvalidOption(option, shown, f"The {what} has more than one ':' (an IPv6 address needs [brackets]).")
        _check_hostname(option, shown, host, what)
    if port_text is None:
        return userinfo, host, None
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 1 <= int(port_text) <= MAX_PORT:
        raise InvalidOption(option, shown, f"The {what} has port {port_text!r}: a port is a number, 1 to {MAX_PORT}.")
    return userinfo, host, int(port_text)


def _check_hostname(option: str, shown: str, host: str, what: str) -> None:
    if not host:
        raise InvalidOption(option, shown, f"The {what} has no host name.")
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(len(label) <= 63 and _HOST_LABEL.fullmatch(label) for label in labels):
        raise InvalidOption(option, shown, f"The {what} has an invalid host name {host!r}.")
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise InvalidOption(option, shown, f"The {what} has an invalid IPv4 address {host!r}.") from None


def check_bind(option: str, address: str) -> str:
    """An address to listen on: an IP address (``0.0.0.0``, ``::``) or a host name."""
    _no_blanks(option, address, address)
    try:
        ipaddress.ip_address(address)
    except ValueError:
        _check_hostname(option, address, address, f"{option} address")
    return address


def validate_host(option: str, host: str) -> str:
    """An http(s) URL that aiohttp can send requests to; request paths are appended to it."""
    _no_blanks(option, host, host)
    usage = "The host must be an http:// or https:// URL, like http://127.0.0.1:8080"
    try:
        parts = urlsplit(host)
    except ValueError as exc:
        raise InvalidOption(option, host, f"{usage} ({exc}).") from None
    if parts.scheme.lower() not in ("http", "https") or not host.lower().startswith(f"{parts.scheme.lower()}://"):
        raise InvalidOption(option, host, f"{usage}.")
    _host_port(option, host, parts.netloc, "host")
    if parts.query or parts.fragment or "?" in host or "#" in host:
        raise InvalidOption(option, host, "The host can not have a ?query or #fragment: request paths are added to it.")
    try:
        parsed = yarl.URL(host)  # aiohttp's parser: whatever it refuses would fail every request
    except (ValueError, UnicodeError) as exc:
        raise InvalidOption(option, host, f"{usage} ({exc}).") from None
    if not parsed.host:
        raise InvalidOption(option, host, f"{usage}.")
    return host.rstrip("/")


# Connection options a --redis-url may carry (its query string), by how they are checked.
# At least (seconds): a socket timeout must outlast the gaggle's blocking stream reads.
_URL_FLOATS = {"socket_timeout": 2 * XREAD_BLOCK_MS / 1000, "socket_connect_timeout": 0.1}
_URL_BOOLS = ("socket_keepalive", "retry_on_timeout")
_URL_STRINGS = ("username", "password", "client_name")
_URL_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_URL_TLS_OTHER = ("ssl_ca_path", "ssl_cert_reqs", "ssl_password", "ssl_ciphers", "ssl_check_hostname")
_URL_OPTIONS = {"db", "health_check_interval", *_URL_FLOATS, *_URL_BOOLS, *_URL_STRINGS}
_TLS_OPTIONS = {*_URL_TLS_FILES, *_URL_TLS_OTHER}


def redact_url(url: str) -> str:
    """The URL with its passwords replaced by ``***``, for logs and errors. Never raises."""
    url = re.sub(r"((?:^|[?&])(?:ssl_)?password=)[^&#]*", r"\1***", url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min([i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0], default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hostport = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{hostport}{tail}"


def validate_redis_url(url: str, option: str = "--redis-url") -> str:
    """A URL redis-py connects with, checked now so that nothing fails (or retries for ever) later."""
    shown = redact_url(url)
    _no_blanks(option, url, shown)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidOption(option, shown, f"The Redis URL can not be parsed: {exc}.") from None
    scheme = parts.scheme
    if scheme not in ("redis", "rediss", "unix") or not url.startswith(f"{scheme}://"):
        raise InvalidOption(option, shown, "The Redis URL must start with redis://, rediss:// or unix://.")
    if scheme == "unix":
        if parts.netloc.rpartition("@")[2]:
            raise InvalidOption(option, shown, "A unix:// URL names a socket file: unix:///path/to/redis.sock.")
        if parts.path in ("", "/"):
            raise InvalidOption(option, shown, "A unix:// URL needs the socket's path: unix:///path/to/redis.sock.")
    else:
        _host_port(option, shown, parts.netloc, "Redis URL", password_only=True)
        if parts.path not in ("", "/"):
            _db(option, shown, parts.path[1:], "the database number after the port")
    if parts.fragment:
        raise InvalidOption(option, shown, "The Redis URL can not have a #fragment.")
    _url_query(option, shown, parts.query, tls=scheme == "rediss")
    return url


def _db(option: str, shown: str, text: str, where: str) -> int:
    if not re.fullmatch(r"[0-9]{1,10}", text) or int(text) > MAX_DB:
        raise InvalidOption(option, shown, f"The Redis URL has {text!r} as {where}: a whole number, 0 or more.")
    return int(text)


def _url_query(option: str, shown: str, query: str, tls: bool) -> None:
    seen: set[str] = set()
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in seen:
            raise InvalidOption(option, shown, f"The Redis URL sets {name!r} twice.")
        seen.add(name)
        if name in _TLS_OPTIONS and not tls:
            raise InvalidOption(option, shown, f"The Redis URL option {name!r} is only for rediss:// (TLS) URLs.")
        if name not in _URL_OPTIONS | _TLS_OPTIONS:
            known = ", ".join(sorted(_URL_OPTIONS | (_TLS_OPTIONS if tls else set())))
            raise InvalidOption(option, shown, f"The Redis URL option {name!r} is not supported (use: {known}).")
        if value == "":
            raise InvalidOption(option, shown, f"The Redis URL option {name!r} has no value.")
        _url_value(option, shown, name, value)


def _url_value(option: str, shown: str, name: str, value: str) -> None:
    def bad(wanted: str) -> InvalidOption:
        return InvalidOption(option, shown, f"The Redis URL option {name}={value!r}: {wanted}.")

    if name == "db":
        _db(option, shown, value, "?db=")
    elif name == "health_check_interval":
        if not re.fullmatch(r"[0-9]{1,7}", value):
            raise bad("it must be a whole number of seconds")
    elif name in _URL_FLOATS:
        least = _URL_FLOATS[name]
        if not _DECIMAL.fullmatch(value) or not least <= float(value) <= MAX_DURATION_S:
            raise bad(f"it must be a number of seconds, at least {least:g}")
    elif name in _URL_BOOLS or name == "ssl_check_hostname":
        if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
            raise bad("it must be true or false")
    elif name == "client_name":
        if not re.fullmatch(r"[!-~]+", value):
            raise bad("Redis allows no spaces or special characters in a client name")
    elif name == "ssl_cert_reqs":
        if value.lower() not in ("none", "optional", "required"):
            raise bad("it must be none, optional or required")
    elif name in _URL_TLS_FILES:
        if not os.path.isfile(value) or not os.access(value, os.R_OK):
            raise bad("no readable file there")
    elif name == "ssl_ca_path" and not os.path.isdir(value):
        raise bad("no directory there")
