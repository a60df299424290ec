"""``ts.handler_utils.utils`` (compat): streaming intermediate responses."""

from __future__ import annotations

import os
from typing import Any


def send_intermediate_predict_response(
    ret: list[Any], req_id_map: dict[int, str], message: str, code: int, context: Any
) -> None:
    """Send one intermediate (streamed) response per request before ``handle`` returns.

    In our worker this goes through the hook the worker attached to the context; each call
    becomes one chunk of the HTTP response, like TorchServe's.
    """
    if str(os.getenv("LOCAL_RANK", "0")) != "0":
        return None
    hook = getattr(context, "_send_intermediate", None)
    if hook is None:
        raise RuntimeError("streaming is not available: no worker is attached to this context")
    hook(ret, req_id_map, message, code)
    return None
