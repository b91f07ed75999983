"""Free TCP ports on the loopback interface."""

from __future__ import annotations

import socket
import threading

_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    The port is closed again before returning, so another process could take it; to keep
    two callers in this test session from racing each other, a port is never handed out twice.
    Prefer binding to port 0 where the server can report its port (as CountingTarget does).
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        with _lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("could not find an unused free port in 100 tries")
