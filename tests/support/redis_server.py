"""A private redis-server process per test session (or per test, for odd configurations)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .ports import free_port

REDIS_BINARY = "redis-server"
HOST = "127.0.0.1"


class RedisUnavailable(RuntimeError):
    """The redis-server binary is not installed."""


def redis_binary() -> str | None:
    """Path of redis-server, or None when it is not installed."""
    return shutil.which(REDIS_BINARY)


class RedisServer:
    """One redis-server on 127.0.0.1, no persistence, in its own temp dir.

    ``extra_args`` are appended to the command line and so override the defaults
    (e.g. ``["--requirepass", "s3cret"]`` or TLS options). ``client_kwargs`` are passed to
    every ``redis.Redis`` this object makes, including the readiness check (e.g.
    ``{"password": "s3cret"}``; for TLS also ``{"port": tls_port, "ssl": True, ...}``).
    A server that answers with an auth error counts as ready.

    Not started by the constructor: call :meth:`start`, or use :func:`start_redis`.
    Always call :meth:`cleanup` (or use it as a context manager).
    """

    def __init__(
        self,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        *,
        client_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        binary = redis_binary()
        if binary is None:
            raise RedisUnavailable(f"{REDIS_BINARY} not found on PATH (Debian: apt-get install redis-server)")
        self.binary = binary
        self.port = port if port is not None else free_port()
        self.extra_args = list(extra_args)
        self.client_kwargs: dict[str, Any] = dict(client_kwargs or {})
        self.dir = Path(tempfile.mkdtemp(prefix=f"goose-redis-test-{self.port}-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._clients: list[redis.Redis] = []

    # ------------------------------------------------------------------ addresses

    @property
    def host(self) -> str:
        return HOST

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (no credentials; see :meth:`url_with`)."""
        return f"redis://{HOST}:{self.port}/0"

    def url_with(
        self, *, username: str | None = None, password: str | None = None, db: int = 0, scheme: str = "redis"
    ) -> str:
        """A URL with credentials, e.g. ``url_with(password="s3cret")``."""
        auth = ""
        if password is not None:
            auth = f"{quote(username or '', safe='')}:{quote(password, safe='')}@"
        elif username is not None:
            auth = f"{quote(username, safe='')}@"
        return f"{scheme}://{auth}{HOST}:{self.port}/{db}"

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def log_text(self) -> str:
        """The server log plus anything it wrote to stdout/stderr (startup errors)."""
        parts = []
        for path in (self.dir / "redis.out", self.log_path):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    # ------------------------------------------------------------------ lifecycle

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--logfile", str(self.log_path),
            *self.extra_args,
        ]  # fmt: skip

    @property
    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart, on the same port) and wait until the server answers."""
        if self.is_running:
            return
        with open(self.dir / "redis.out", "ab") as out:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,  # a Ctrl-C aimed at pytest must not kill it before teardown
            )
        deadline = time.monotonic() + timeout
        while True:
            returncode = self.proc.poll()
            if returncode is not None:
                raise RuntimeError(
                    f"redis-server on port {self.port} exited with {returncode} during startup:\n" + self.log_text()
                )
            if self.answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not answer within {timeout}s:\n{self.log_text()}"
                )
            time.sleep(0.02)

    def answers(self) -> bool:
        """True when something speaking RESP answers PING (an auth error counts)."""
        kwargs: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "socket_timeout": 1.0,
            "socket_connect_timeout": 1.0,
            # redis-py's default retries back off for ~4 s on a refused connection.
            "retry": Retry(NoBackoff(), 0),
            **self.client_kwargs,
        }
        client = redis.Redis(**kwargs)
        try:
            client.ping()
            return True
        except (redis.AuthenticationError, redis.ResponseError):
            # AuthenticationError subclasses ConnectionError, so it must be caught first.
            return True
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait for exit (SIGKILL if it does not exit within ``timeout``)."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            self.resume()  # a stopped (SIGSTOP) process would not handle SIGTERM
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL and reap: an abrupt crash, no shutdown handling."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its connections but stops answering (a hung Redis)."""
        if self.is_running:
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.is_running:
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        """Close the clients made by :meth:`client`, stop the server, remove its dir."""
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    # ------------------------------------------------------------------ data

    def client(self, **kwargs: Any) -> redis.Redis:
        """A sync client (closed by :meth:`cleanup`); kwargs override ``client_kwargs``."""
        merged: dict[str, Any] = {"host": HOST, "port": self.port, **self.client_kwargs, **kwargs}
        client = redis.Redis(**merged)
        self._clients.append(client)
        return client

    def flushall(self) -> None:
        kwargs: dict[str, Any] = {"host": HOST, "port": self.port, **self.client_kwargs}
        client = redis.Redis(**kwargs)
        try:
            client.flushall()
        finally:
            client.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<RedisServer {self.url} {state} extra_args={self.extra_args!r}>"


def start_redis(
    extra_args: Sequence[str] | None = None,
    port: int | None = None,
    *,
    client_kwargs: Mapping[str, Any] | None = None,
    timeout: float = 10.0,
) -> RedisServer:
    """Create and start a :class:`RedisServer`; the caller owns it and must ``cleanup()``.

    In tests prefer the ``redis_factory`` fixture, which cleans up for you.
    """
    server = RedisServer(port, extra_args or (), client_kwargs=client_kwargs)
    try:
        server.start(timeout)
    except BaseException:
        server.cleanup()
        raise
    return server
