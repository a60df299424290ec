"""What travels from an HTTP handler to a worker and back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("jupyter_torchserve.engine")


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
    # called as soon as the future is settled, in the same loop turn (a done-callback would
    # wait for the next one); not called when the job is withdrawn (future cancelled)
    on_done: Callable[[Job], None] | None = None

    @property
    def kind(self) -> str:
        """ "explanation" or "prediction": what the handler is asked for, read from the
        `explain` header that TorchServe's frontend sets (and our built-ins read: "True",
        leniently any case, or "1"). Batches are formed of one kind (model.py), since an
        explanation costs about `n_steps` forward and backward passes of a prediction, and
        each kind is timed under its own metrics label."""
        value = self.headers.get("explain")
        if value is not None and value.strip().lower() in ("true", "1"):
            return "explanation"
        return "prediction"

    def finish(self, reply: Reply) -> None:
        if not self.future.done():
            self.future.set_result(reply)
            self._settled()

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)
            self._settled()

    def _settled(self) -> None:
        if self.on_done is not None:
            try:
                self.on_done(self)
            except Exception:  # noqa: BLE001 - one client's answer must not break the worker link
                log.exception("answering request %s failed", self.id)
