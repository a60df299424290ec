"""A closed-loop HTTP/1.1 load generator, run as its own process by `bench`.

Why a process of its own: a load test driven from the kernel's event loop would measure the
kernel (its GIL, its display updates) as much as the engine, and the kernel must stay free to
draw the progress bar. Why asyncio Protocols with httptools' C parser rather than requests or
aiohttp: CPU per request. On a 2-core machine the generator shares the cores with the engine
and its workers, so every microsecond it spends is one the server does not get; this loop
does one `write` and one parse per request and keeps nothing per request but its latency
(docs/performance.md, "The load generator against wrk", for how close it gets to wrk).

Each connection sends its next request when the previous answer is complete (a closed loop,
like wrk). When the run ends (duration or request count reached) no new request is sent and
the ones in flight are awaited, so every request the engine counted is in the result.

Protocol: `python -m jupyter_torchserve.loadgen PLAN.json` writes JSON lines to stdout:
`{"type": "progress", ...}` every `progress_interval` seconds, then one `{"type": "result",
...}`. Its own CPU time is in the result (`cpu_seconds`, `cpu_cores`), so a caller can tell
when the generator, not the server, was the limit.
"""

from __future__ import annotations

import asyncio
import json
import math
import resource
import sys
import time
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httptools


@dataclass(frozen=True)
class Plan:
    """One load level: where to send what, how many at once, for how long."""

    host: str
    port: int
    path: str
    body_file: str
    content_type: str = "application/octet-stream"
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    connections: int = 1
    duration: float = 10.0
    requests: int | None = None  # stop after this many answers (overrides duration)
    timeout: float = 30.0  # a request unanswered this long counts as an error
    progress_interval: float = 0.5

    def request_bytes(self, body: bytes) -> bytes:
        lines = [
            f"{self.method} {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in self.headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def percentile(sorted_values: Any, q: float) -> float | None:
    """The q-th percentile (0-100) by the nearest rank: the smallest value with at least q %
    of the values at or below it."""
    n = len(sorted_values)
    if not n:
        return None
    rank = max(0, min(n - 1, math.ceil(q / 100 * n) - 1))
    return float(sorted_values[rank])


def summary_ms(latencies: Any) -> dict[str, float | None]:
    ordered = sorted(latencies)
    out: dict[str, float | None] = {}
    for q in (50, 90, 99):
        v = percentile(ordered, q)
        out[f"p{q}_ms"] = None if v is None else v * 1000
    out["mean_ms"] = sum(ordered) / len(ordered) * 1000 if ordered else None
    out["max_ms"] = ordered[-1] * 1000 if ordered else None
    return out


class _Run:
    """State shared by every connection of one level."""

    def __init__(self, plan: Plan, request: bytes) -> None:
        self.plan = plan
        self.request = request
        self.latencies = array("d")
        self.statuses: Counter[int] = Counter()
        self.failures: Counter[str] = Counter()  # connect, reset, timeout
        self.sent = 0
        self.stopping = False
        self.in_flight = 0
        self.idle = asyncio.Event()  # set while nothing is in flight
        self.idle.set()
        self.first_send = 0.0
        self.last_answer = 0.0

    def may_send(self) -> bool:
        if self.stopping:
            return False
        if self.plan.requests is not None and self.sent >= self.plan.requests:
            self.stopping = True
            return False
        return True

    def started(self) -> None:
        self.sent += 1
        self.in_flight += 1
        self.idle.clear()

    def finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()

    @property
    def answered(self) -> int:
        return len(self.latencies)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: send, wait for the whole answer, send again."""

    def __init__(self, run: _Run, on_closed: Any) -> None:
        self.run = run
        self.on_closed = on_closed
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.t0 = 0.0  # perf_counter() of the request in flight; 0 when none
        self.done = False

    # -- asyncio ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # pragma: no cover - never asked for
            self.fail("reset")
        except httptools.HttpParserError:
            self.fail("reset")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.t0:
            self.run.failures["reset"] += 1
            self.t0 = 0.0
            self.run.finished()
        self.transport = None
        if not self.done:
            self.done = True
            self.on_closed(self)

    # -- httptools -------------------------------------------------------------------------
    def on_message_complete(self) -> None:
        now = time.perf_counter()
        run = self.run
        run.latencies.append(now - self.t0)
        run.statuses[self.parser.get_status_code()] += 1
        run.last_answer = now
        self.t0 = 0.0
        run.finished()
        if not self.parser.should_keep_alive():
            self.close()
            return
        self.send()

    # -- ours ------------------------------------------------------------------------------
    def send(self) -> None:
        if self.transport is None or not self.run.may_send():
            self.close()
            return
        self.run.started()
        self.t0 = time.perf_counter()
        if not self.run.first_send:
            self.run.first_send = self.t0
        self.transport.write(self.run.request)

    def fail(self, why: str) -> None:
        """Count the request in flight as failed and drop the connection."""
        if self.t0:
            self.run.failures[why] += 1
            self.t0 = 0.0
            self.run.finished()
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


async def _drive(plan: Plan, emit: Any) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    with open(plan.body_file, "rb") as f:
        body = f.read()
    run = _Run(plan, plan.request_bytes(body))
    connections: set[_Connection] = set()
    reconnect: asyncio.Queue[None] = asyncio.Queue()

    def closed(conn: _Connection) -> None:
        connections.discard(conn)
        if not run.stopping:
            reconnect.put_nowait(None)

    async def connect() -> None:
        try:
            _, conn = await loop.create_connection(
                lambda: _Connection(run, closed), plan.host, plan.port
            )
            connections.add(conn)  # type: ignore[arg-type]
        except OSError:
            run.failures["connect"] += 1
            await asyncio.sleep(0.05)  # a refused port must not spin the loop
            if not run.stopping:
                reconnect.put_nowait(None)

    async def keep_connected() -> None:
        while True:
            await reconnect.get()
            if not run.stopping:
                await connect()

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t_start = time.perf_counter()
    keeper = loop.create_task(keep_connected())
    await asyncio.gather(*(connect() for _ in range(plan.connections)))
    deadline = t_start + plan.duration if plan.requests is None else float("inf")
    mark, marked = t_start, 0
    while not run.stopping or run.in_flight:
        await asyncio.sleep(min(plan.progress_interval, 0.25))
        now = time.perf_counter()
        if now >= deadline:
            run.stopping = True
        for conn in list(connections):  # requests stuck past the timeout
            if conn.t0 and now - conn.t0 > plan.timeout:
                conn.fail("timeout")
        if now - mark >= plan.progress_interval:
            recent = run.latencies[marked:]
            emit(
                {
                    "type": "progress",
                    "elapsed": round(now - t_start, 3),
                    "answered": run.answered,
                    "errors": _errors(run),
                    "rps": round(len(recent) / (now - mark), 1),
                    **summary_ms(recent),
                }
            )
            mark, marked = now, len(run.latencies)
        if run.stopping and not run.in_flight:
            break
        if plan.requests is not None and run.sent >= plan.requests and not run.in_flight:
            break
        if not connections and run.stopping:
            break
    keeper.cancel()
    for conn in list(connections):
        conn.done = True
        conn.close()
    wall = time.perf_counter() - t_start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    span = (run.last_answer - run.first_send) if run.answered else 0.0
    return {
        "type": "result",
        "plan": asdict(plan),
        "sent": run.sent,
        "answered": run.answered,
        "statuses": {str(k): v for k, v in sorted(run.statuses.items())},
        "failures": dict(run.failures),
        "errors": _errors(run),
        "seconds": round(span, 4),
        "wall_seconds": round(wall, 4),
        "rps": round(run.answered / span, 1) if span > 0 else 0.0,
        **summary_ms(run.latencies),
        "cpu_seconds": round(cpu, 4),
        "cpu_cores": round(cpu / wall, 3) if wall > 0 else 0.0,
    }


def _errors(run: _Run) -> int:
    """Answers that were not 2xx plus requests that got no answer at all."""
    bad = sum(n for status, n in run.statuses.items() if not 200 <= status < 300)
    return bad + sum(run.failures.values())


def run_plan(plan: Plan, emit: Any = None) -> dict[str, Any]:
    """Run one level in this process (the `__main__` path, and tests of the loop itself)."""
    return asyncio.run(_drive(plan, emit or (lambda _line: None)))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    text = open(args[0]).read() if args and args[0] != "-" else sys.stdin.read()
    plan = Plan(**json.loads(text))

    def emit(line: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    emit(run_plan(plan, emit))


if __name__ == "__main__":
    main()
