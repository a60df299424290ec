"""``ts.context``: TorchServe's Context and RequestProcessor, provided by jupyter_torchserve."""

from jupyter_torchserve.handlers.context import Context, RequestProcessor

__all__ = ["Context", "RequestProcessor"]
