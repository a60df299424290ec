"""Free loopback ports, for the engines, clusters and servers this package (and its tests) start.

Why one function that remembers: the kernel may hand the same ephemeral port to two
back-to-back probes once the first probe socket is closed, so an engine given one port for
two of its APIs fails to start ("already in use" by itself). Every caller therefore names
the ports it must not get again; by default, every port this process handed out before.
"""

from __future__ import annotations

import socket

_handed_out: set[int] = set()


def free_port(taken: set[int] | None = None) -> int:
    """A loopback port nothing listens on now and not in ``taken`` (added to it).

    ``taken`` defaults to this process's own record of the ports it handed out.
    """
    avoid = _handed_out if taken is None else taken
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            avoid.add(port)
            return port
