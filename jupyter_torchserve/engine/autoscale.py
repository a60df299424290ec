"""Autoscaling: a model version's workers follow its load between min_worker and max_worker.

TorchServe stores `min_worker`/`max_worker` and never acts on the difference. Here a version
whose max is above its min is watched every `autoscale_interval` seconds:

* **up**: when its queue has stayed deep (at least `autoscale_queue_depth` waiting requests
  per live worker) or slow (the oldest waited `autoscale_queue_wait_ms`) for
  `autoscale_up_window` seconds, one worker is added, up to max. One start at a time: the
  next decision waits until the new worker is ready, so a slow load is not answered by a
  burst of starts that all finish too late.
* **a failed start** (the GPU guard's 507, a load that fails, startup_timeout) is an event,
  and the next start waits for a cool-down after it: a load that stays high against a full
  GPU is not answered by a refused start, and a log line, every second.
* **down**: when, for `autoscale_cooldown` seconds (and as long since the last change), the
  queue stayed empty and at least one worker had nothing in flight at every look, one worker
  is drained (it answers what it holds, then exits; `Worker.stop`), down to min.

The watch reads the queue and the workers' in-flight counts, which the event loop keeps
anyway, so a look costs nothing per request. Every decision is an `Event`: in the model's
log, in `describe` (`autoscale.events`), and counted as `jts_autoscale_events_total`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from ..config import EngineConfig
from .workers import READY, STARTING, Worker

log = logging.getLogger("jupyter_torchserve.engine")

#: Decisions kept per version for `describe` (the metric counts them all).
EVENTS_KEPT = 20


@dataclass(frozen=True)
class Policy:
    """When to add and remove workers; read from the engine's config at each look, so a
    changed setting applies to the next decision."""

    interval: float
    queue_depth: int
    queue_wait_ms: float
    up_window: float
    cooldown: float

    @classmethod
    def from_config(cls, config: EngineConfig) -> Policy:
        return cls(
            interval=config.autoscale_interval,
            queue_depth=config.autoscale_queue_depth,
            queue_wait_ms=config.autoscale_queue_wait_ms,
            up_window=config.autoscale_up_window,
            cooldown=config.autoscale_cooldown,
        )


@dataclass(frozen=True)
class Event:
    """One decision: `up`, `down`, or `failed` (a start that did not work)."""

    time: float
    action: str
    workers_before: int
    workers_after: int
    reason: str

    def line(self) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.time))
        return (
            f"{stamp} [autoscale] {self.action} {self.workers_before} -> "
            f"{self.workers_after} workers: {self.reason}\n"
        )


class Scalable(Protocol):
    """A model version, as the autoscaler sees it (engine/model.py's ModelVersion)."""

    name: str
    version: str
    min_workers: int
    max_workers: int
    unregistered: bool
    workers: list[Worker]
    log_path: Path

    @property
    def live_workers(self) -> list[Worker]: ...

    def queue_depth(self) -> int: ...

    def oldest_wait(self) -> float: ...

    async def add_worker(self) -> Worker: ...

    def drain_worker(self, worker: Worker) -> None: ...


class Autoscaler:
    """The state of one version's policy between looks: since when the queue has been under
    pressure, since when a worker has been spare, and the decisions made."""

    def __init__(self, on_event: Callable[[Scalable, Event], None]) -> None:
        self.on_event = on_event
        self.pressure_since: float | None = None
        self.spare_since: float | None = None
        self.last_change = 0.0
        self.starting: asyncio.Task[Any] | None = None
        self.start_failed = False  # the last start failed: no other before `up_after`
        self.up_after: float | None = None
        self.events: deque[Event] = deque(maxlen=EVENTS_KEPT)

    def look(self, mv: Scalable, policy: Policy, now: float) -> None:
        """Decide once for `mv` (called every `policy.interval` seconds)."""
        if mv.unregistered or mv.max_workers <= mv.min_workers:
            self.pressure_since = self.spare_since = None
            return
        live = mv.live_workers
        if any(w.status == STARTING for w in live) or (self.starting and not self.starting.done()):
            return  # one change at a time; a start in progress answers the pressure
        depth, wait = mv.queue_depth(), mv.oldest_wait()
        deep = depth >= policy.queue_depth * max(1, len(live))
        slow = wait * 1000 >= policy.queue_wait_ms
        if self.start_failed:
            self.start_failed = False
            self.up_after = now + policy.cooldown
        if deep or slow:
            self.spare_since = None
            if self.up_after is not None and now < self.up_after:
                self.pressure_since = None  # after the pause, a full window again
                return
            if self.pressure_since is None:
                self.pressure_since = now
            if now - self.pressure_since >= policy.up_window and len(live) < mv.max_workers:
                why = f"{depth} requests queued" if deep else f"oldest waited {wait * 1000:.0f} ms"
                self._up(mv, len(live), f"{why} for {now - self.pressure_since:.1f} s", policy)
                self.pressure_since = None
            return
        self.pressure_since = None
        ready = [w for w in live if w.status == READY]
        idle = [w for w in ready if not w.inflight]
        if depth or not idle or len(live) <= mv.min_workers:
            self.spare_since = None
            return
        if self.spare_since is None:
            self.spare_since = now
        quiet = now - max(self.spare_since, self.last_change)
        if quiet >= policy.cooldown:
            worker = idle[-1]  # the newest idle one: the oldest keep their warm caches
            mv.drain_worker(worker)
            self.last_change = now
            self.spare_since = None
            self._record(
                mv,
                "down",
                len(live),
                len(live) - 1,
                f"a worker was idle for {quiet:.0f} s (cool-down {policy.cooldown:g} s); "
                f"worker {worker.id} drained",
            )

    def _up(self, mv: Scalable, before: int, reason: str, policy: Policy) -> None:
        self.last_change = time.monotonic()
        self.up_after = None

        async def start() -> None:
            try:
                worker = await mv.add_worker()
            except Exception as e:  # noqa: BLE001 - told as an event, the version keeps serving
                message = getattr(e, "message", None) or str(e)
                self.start_failed = True
                self._record(
                    mv,
                    "failed",
                    before,
                    len(mv.live_workers),
                    f"{message}; the next start waits {policy.cooldown:g} s (cool-down)",
                )
                return
            self.last_change = time.monotonic()  # the cool-down counts from the worker's start
            self._record(mv, "up", before, before + 1, f"{reason}; worker {worker.id} ready")

        self.starting = asyncio.get_running_loop().create_task(start())

    def _record(self, mv: Scalable, action: str, before: int, after: int, reason: str) -> None:
        event = Event(time.time(), action, before, after, reason)
        self.events.append(event)
        self.on_event(mv, event)

    def describe_json(self, mv: Scalable, policy: Policy) -> dict[str, Any]:
        return {
            "enabled": mv.max_workers > mv.min_workers,
            "policy": {k: v for k, v in asdict(policy).items() if k != "interval"},
            "events": [asdict(e) for e in self.events],
        }


def write_event(mv: Scalable, event: Event) -> None:
    """The model's log is where a user looks for what happened to its workers."""
    log.info("%s %s: %s", mv.name, mv.version, event.line().strip())
    try:
        with open(mv.log_path, "a") as f:  # O_APPEND: whole lines beside the workers' own
            f.write(event.line())
    except OSError as e:
        log.warning("could not write to %s: %s", mv.log_path, e)


async def watch(
    versions: Callable[[], Iterable[Any]], config: EngineConfig, stop: asyncio.Event
) -> None:
    """Look at every version every `autoscale_interval` seconds until `stop` is set."""
    while not stop.is_set():
        policy = Policy.from_config(config)
        now = time.monotonic()
        for mv in versions():
            try:
                mv.autoscaler.look(mv, policy, now)
            except Exception:  # noqa: BLE001 - one version's bug must not stop the others
                log.exception("autoscaling %s %s", mv.name, mv.version)
        try:
            await asyncio.wait_for(stop.wait(), max(0.05, policy.interval))
        except asyncio.TimeoutError:
            pass
