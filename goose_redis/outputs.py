"""Can the run write its output files? Asked before anything starts.

A run that cannot write its report finds out only at its end, after the whole
load test (and a Worker that cannot open its request log would crash while
its Manager waits for it). So ``build_config`` checks every output path up
front with ``check_output`` (reports, the request log, and any log option
added later) and ``check_distinct`` (no two outputs share a file).

The check touches nothing that stays: an existing file is opened for
appending and closed again (its content and modification time are
unchanged); a new file is created and removed at once, which also catches
what ``os.access`` cannot see (a read-only file system, a name too long, root
on a mount that refuses root). Missing directories are an error, never
created: a typo in a directory name should not silently make a new tree.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable

from .errors import InvalidOption


def _reason(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


def check_output(option: str, path: str, file: str | None = None) -> str:
    """Raise InvalidOption unless ``file`` (default: ``path``) can be written; return ``path``.

    ``path`` is what the user typed (shown in the error); ``file`` is the file
    actually written, when one option writes several (a ``.csv`` report).
    """
    file = path if file is None else file
    if not path:
        raise InvalidOption(option, path, f"The {option} option needs a file name.")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in file):
        raise InvalidOption(option, path, f"The {option} file name contains a control character.")
    if file.endswith(os.sep) or os.path.isdir(file):
        raise InvalidOption(option, path, f"The {option} option names a directory, not a file: {file}.")
    directory = os.path.dirname(os.path.abspath(file))
    if not os.path.exists(directory):
        raise InvalidOption(option, path, f"The directory {directory} does not exist (create it first).")
    if not os.path.isdir(directory):
        raise InvalidOption(option, path, f"{directory} is not a directory.")
    try:
        info = os.stat(file)
    except FileNotFoundError:
        return _check_new(option, path, file, directory)
    except OSError as exc:
        raise InvalidOption(option, path, f"Can not write {file}: {_reason(exc)}.") from None
    if stat.S_ISSOCK(info.st_mode):
        raise InvalidOption(option, path, f"{file} is a socket, not a file.")
    if not os.access(file, os.W_OK):
        raise InvalidOption(option, path, f"Can not write {file}: permission denied.")
    if stat.S_ISREG(info.st_mode):  # not a FIFO or a device: opening those can block or have effects
        try:
            with open(file, "ab"):
                pass
        except OSError as exc:
            raise InvalidOption(option, path, f"Can not write {file}: {_reason(exc)}.") from None
    return path


def _check_new(option: str, path: str, file: str, directory: str) -> str:
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InvalidOption(option, path, f"Can not create files in {directory}: permission denied.")
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # someone made it just now: it is theirs, leave it
        return path
    except OSError as exc:
        raise InvalidOption(option, path, f"Can not create {file}: {_reason(exc)}.") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(file)
    return path


def per_process(path: str, processes: int) -> list[str]:
    """The files one log option writes with ``--processes N``: each process its own, so no line
    is ever split between two writers: ``PATH`` for the first, then ``PATH.2``, ``PATH.3``, ..."""
    return [path] + [f"{path}.{k}" for k in range(2, processes + 1)]


def same_file_key(file: str) -> str:
    """One spelling per file: relative, ``./x`` and symlinked paths compare equal."""
    return os.path.normcase(os.path.realpath(file))


def check_distinct(outputs: Iterable[tuple[str, str, str]], inputs: Iterable[tuple[str, str]] = ()) -> None:
    """No file written twice, and no input overwritten.

    ``outputs`` are ``(option, path as typed, file written)``; ``inputs`` are
    ``(option, path)`` of files the run reads (the load-test file)."""
    seen = {same_file_key(path): (option, path) for option, path in inputs if path}
    for option, path, file in outputs:
        if os.path.exists(file) and not os.path.isfile(file):
            continue  # /dev/null and friends take any number of writers
        key = same_file_key(file)
        if key in seen:
            other, other_path = seen[key]
            raise InvalidOption(
                option, path, f"{file} is also the {other} {other_path}: give each output its own file."
            )
        seen[key] = (option, path)
