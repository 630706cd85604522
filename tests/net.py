"""Network helpers for tests."""

from __future__ import annotations

import socket


def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound once by the OS, then released): for a server
    the test starts, or for a target that must refuse connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
