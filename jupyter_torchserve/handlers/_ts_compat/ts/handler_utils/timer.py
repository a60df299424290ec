"""``ts.handler_utils.timer`` (compat): the ``@timed`` decorator of handler steps."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any


def timed(func: Callable[..., Any]) -> Callable[..., Any]:
    """Record the step's duration as ``ts_handler_<step>`` (ms) in the context's metrics."""

    @functools.wraps(func)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = func(self, *args, **kwargs)
        metrics = getattr(getattr(self, "context", None), "metrics", None)
        if metrics is not None and hasattr(metrics, "add_time"):
            elapsed = round((time.perf_counter() - started) * 1000, 2)
            metrics.add_time(f"ts_handler_{func.__name__}", elapsed, None, "ms")
        return result

    return wrapper
