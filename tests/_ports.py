"""Free loopback ports for the engines, servers and TorchServe instances the tests start."""

from __future__ import annotations

import socket

_given: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, and never one this test process handed out before.

    The kernel may return the same ephemeral port to two back-to-back probes once the first
    probe socket is closed; an engine given one port for two of its APIs then fails to start
    ("already in use" by itself). Remembering what was handed out rules that out.
    """
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given:
            _given.add(port)
            return port
