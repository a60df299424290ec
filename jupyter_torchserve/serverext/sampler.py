"""The task that fills the dashboard's `History`: every `interval` seconds, while Jupyter runs,
read the engine's /metrics and the autoscaler's decisions from `describe`.

It runs on the Jupyter server's event loop and only awaits the `Gateway`'s non-blocking HTTP
calls; a page is a few kB, so parsing it there costs well under a millisecond. No engine is
not an error: the sampler waits for one (the dashboard then shows "no engine" and keeps the
history it had).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from jupyter_torchserve.contract import EngineError

from .gateway import Gateway
from .history import History, snapshot


class Sampler:
    """One per Jupyter server, started by the extension's loader."""

    def __init__(self, gateway: Gateway, history: History, log: Any = None) -> None:
        self.gateway = gateway
        self.history = history
        self.log = log
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sampling on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def sample_once(self) -> bool:
        """One reading; False (and `history.last_error` set) when there was nothing to read."""
        try:
            families = await self.gateway.families()
        except (EngineError, ValueError) as exc:
            self.history.last_error = str(exc)
            return False
        self.history.add(snapshot(families, time.time()))
        self.history.last_error = None
        try:
            await self._decisions()
        except (EngineError, ValueError) as exc:  # a model unregistered meanwhile
            if self.log is not None:
                self.log.debug("jupyter_torchserve: no autoscale decisions this time: %s", exc)
        return True

    async def _decisions(self) -> None:
        for entry in await self.gateway.list_models():
            name = entry["modelName"]
            for v in await self.gateway.describe_all(name):
                events = (v.get("autoscale") or {}).get("events") or []
                self.history.add_decisions(name, str(v.get("modelVersion")), events)

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.sample_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the sampler must outlive a bad page
                if self.log is not None:
                    self.log.exception("jupyter_torchserve: dashboard sample failed")
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.1, self.history.interval - elapsed))
