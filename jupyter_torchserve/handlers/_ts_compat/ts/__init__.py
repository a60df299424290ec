"""jupyter_torchserve's stand-in for TorchServe's ``ts`` package (handler-facing parts only).

It is put on ``sys.path`` by ``jupyter_torchserve.handlers.compat.ensure_ts_importable`` only
when the real ``ts`` (the ``torchserve`` wheel) is not installed, so existing TorchServe
handlers run in our workers unchanged and a real TorchServe install always takes precedence.
"""

__version__ = "0.12.0"
__jupyter_torchserve_compat__ = True
