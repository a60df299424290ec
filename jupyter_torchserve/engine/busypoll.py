"""Busy-polling around a worker's answer: the engine's idle wait, made short. The rule lives
here, with the code that keeps it; docs/architecture.md §3 and the pool link to it.

On a VM, a process that blocks in `epoll_wait` and is woken by another process's write pays
a hypervisor round trip before it runs again (its vCPU halted), about as much as the Python
work around one request (measured: docs/performance.md, "busy-polling around a worker's
answer"). So at light load, while a batch is out at a worker and a CPU is free for it, the
engine polls its sockets without blocking for a short while (`busy_poll_us`) around the
moment the answer is due, before it sleeps (`BusyPollSelector`); the worker does the same
for its next batch (`protocol.SyncConnection.poll`, for as long as `PollWindow` says). That
is the trade Linux's `SO_BUSY_POLL`, KVM's halt-polling and Go's spinning scheduler make: a
little CPU, only while an answer is expected, for a wake-up that costs nothing.

Who may poll (`answer_due`, `worker_poll_us`): only at light load (`lightly_loaded`: one
batch out at the worker and nothing queued for its model), since under load the next work is
there whatever a wake-up costs and the clients need the CPU more; and only while the engine
and every worker with a batch out still have a CPU each, so polling never takes a CPU that a
worker or the engine is waiting for. With no batch out the engine sleeps as before.
"""

from __future__ import annotations

import asyncio
import math
import select
import selectors
import sys
import time
from collections.abc import Callable, Collection, Coroutine
from typing import Any, Protocol


class Polled(Protocol):
    """What the rule reads of a worker with a batch out."""

    @property
    def n_inflight(self) -> int:
        """Batches sent to it and not answered yet."""

    @property
    def queued(self) -> int:
        """Requests waiting for its model version."""

    def answer_expected_at(self) -> float:
        """`perf_counter()` time at which its current batch should be answered."""


def lightly_loaded(worker: Polled) -> bool:
    """One batch out and nothing queued for its model: the only case where polling pays."""
    return worker.n_inflight <= 1 and not worker.queued


def answer_due(busy: Collection[Polled], cpus: int) -> float | None:
    """Seconds until the next answer of a `busy` worker is expected (negative: late), for the
    engine's selector; None when the engine should not poll."""
    if not busy or len(busy) >= cpus:
        return None
    due = math.inf
    for worker in busy:
        if not lightly_loaded(worker):
            return None
        due = min(due, worker.answer_expected_at())
    return due - time.perf_counter()


def worker_poll_us(worker: Polled, busy: int, cpus: int, poll_us: int) -> int:
    """How long `worker`, just given a batch, may poll for its next one after it answers
    (the `poll` of its `infer` frame), with `busy` workers holding a batch on `cpus` CPUs."""
    if not lightly_loaded(worker) or busy >= cpus:
        return 0
    return poll_us


class BusyPollSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The platform's default selector, whose `select` polls without blocking around the
    moment a worker's answer is due.

    `answer_due()` (set to the pool's once it exists) gives the seconds until then, or None
    when no answer is expected or no CPU is free to poll on. When it is due within `spin_s`
    (or up to `spin_s` late) `select` polls for up to `spin_s`; earlier, it first sleeps
    until `spin_s / 2` before it (a nap costs a wake-up, so only when that is worth it). A
    batch costs at most about one such spin, so a slow model costs little CPU and an idle
    engine none.
    """

    def __init__(self, spin_s: float = 0.0) -> None:
        super().__init__()
        self.spin_s = spin_s
        self.answer_due: Callable[[], float | None] = _nothing_due

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        spin = self.spin_s
        if spin <= 0 or (timeout is not None and timeout <= 0):
            return super().select(timeout)
        due = self.answer_due()
        if due is None or due < -spin:
            return super().select(timeout)
        if due > spin:  # too early to poll: sleep until nearly due (any event still wakes us)
            nap = due - spin / 2
            if timeout is not None and timeout <= nap:
                return super().select(timeout)
            ready = self._nap(nap)
            if ready:
                return ready
            if timeout is not None:
                timeout -= nap
        limit = spin if timeout is None else min(spin, timeout)
        poll = super().select
        now = time.perf_counter
        start = now()
        # no sched_yield between polls: measured, the syscall cost more than it gave back
        while True:
            ready = poll(0)
            if ready:
                return ready
            waited = now() - start
            if waited >= limit:
                break
        if timeout is not None:
            timeout = max(0.0, timeout - waited)
        return super().select(timeout)

    def _nap(self, seconds: float) -> list[tuple[Any, int]]:
        """Block until an event is pending or `seconds` pass, at µs resolution.

        `epoll_wait` counts whole milliseconds (rounded up), too coarse for a nap shorter
        than one; `select()` on the epoll descriptor itself waits in µs and says whether it
        has events, which the polling that follows then collects.
        """
        fileno = getattr(self, "fileno", None)  # epoll and kqueue selectors have one
        fd = fileno() if fileno is not None else -1
        if 0 <= fd < 1024:  # FD_SETSIZE; the selector's own fd is opened early, so small
            select.select([fd], [], [], seconds)
            return []
        return super().select(seconds)


def _nothing_due() -> float | None:
    return None


def run(main: Coroutine[Any, Any, None], selector: BusyPollSelector) -> None:
    """`asyncio.run(main)` on a loop that uses `selector`."""
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(selector)) as runner:
            runner.run(main)
        return

    class _Policy(asyncio.DefaultEventLoopPolicy):  # 3.10: asyncio.run asks the policy
        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            return asyncio.SelectorEventLoop(selector)

    asyncio.set_event_loop_policy(_Policy())
    try:
        asyncio.run(main)
    finally:
        asyncio.set_event_loop_policy(None)


class PollWindow:
    """How long a worker polls for its next batch after answering, learned from the gaps.

    The engine allows `base` µs (`busy_poll_us`, and only at light load). A client that
    sends its next request as soon as it has the answer still takes a while, and a client
    that slept through a long batch wakes slower (docs/performance.md, "the worker's poll
    window"). A worker that stops polling before then sleeps, pays the wake-up, and runs its
    next batch on a cold CPU. So the window follows KVM's halt-polling rule: a batch that came
    after the window, but soon (within `GROWTH` × base), doubles it, up to that limit; one
    that came later than that (a client that paused) halves it, down to `base`. A batch
    caught while polling changes nothing. Polling ends as soon as a batch arrives, so a
    caught batch costs only its gap.
    """

    GROWTH = 4

    def __init__(self) -> None:
        self.us = 0

    def current(self, base_us: int) -> int:
        """The window for an answer just sent, given the engine's `poll` for it."""
        if base_us <= 0:
            return 0
        self.us = min(max(self.us, base_us), base_us * self.GROWTH)
        return self.us

    def missed(self, base_us: int, gap_us: float) -> None:
        """The next batch came `gap_us` after the answer, after the window had ended."""
        if base_us <= 0:
            return
        if gap_us <= base_us * self.GROWTH:
            self.us = min(self.us * 2, base_us * self.GROWTH)
        else:
            self.us = max(self.us // 2, base_us)
