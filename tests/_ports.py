"""Free loopback ports for the engines, servers and TorchServe instances the tests start.

The one implementation is the package's (:func:`jupyter_torchserve.ports.free_port`, which
never hands out one port twice in a process); this name stays for the tests and scripts
that import ``_ports``.
"""

from __future__ import annotations

from jupyter_torchserve.ports import free_port

__all__ = ["free_port"]
