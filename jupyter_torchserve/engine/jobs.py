"""What travels from an HTTP handler to a worker and back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Reply:
    status: int
    content_type: str
    body: bytes
    reason: str = "OK"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class Job:
    """One inference request waiting for (or being served by) a worker."""

    id: str
    headers: dict[str, str]
    params: list[tuple[str, str, bytes]]
    future: asyncio.Future[Reply]
    enqueued: float = field(default_factory=time.perf_counter)
    dispatched: float = 0.0
    retried: bool = False
    # set by handlers that stream: called with each intermediate Reply before the last one
    on_chunk: Callable[[Reply], None] | None = None

    def finish(self, reply: Reply) -> None:
        if not self.future.done():
            self.future.set_result(reply)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)
