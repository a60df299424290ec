"""The autoscaler's decisions, on a version made here (no process): up after the window,
one start at a time, never above max; down after the cool-down, never below min; every
decision recorded."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_torchserve.engine.autoscale import Autoscaler, Event, Policy
from jupyter_torchserve.engine.workers import READY, UNLOADING

POLICY = Policy(interval=0.1, queue_depth=4, queue_wait_ms=200, up_window=1.0, cooldown=5.0)


@dataclass(eq=False)
class W:
    id: str
    status: str = READY
    inflight: dict = field(default_factory=dict)


@dataclass
class Version:
    name: str = "m"
    version: str = "1.0"
    min_workers: int = 1
    max_workers: int = 3
    unregistered: bool = False
    workers: list = field(default_factory=lambda: [W("9000")])
    log_path: Path = Path("/dev/null")
    depth: int = 0
    wait: float = 0.0

    @property
    def live_workers(self) -> list:
        return [w for w in self.workers if w.status == READY]

    def queue_depth(self) -> int:
        return self.depth

    def oldest_wait(self) -> float:
        return self.wait

    async def add_worker(self) -> Any:
        w = W(str(9000 + len(self.workers)))
        self.workers.append(w)
        return w

    def drain_worker(self, worker: Any) -> None:
        worker.status = UNLOADING


def run_looks(scaler: Autoscaler, mv: Version, times: list[float]) -> None:
    async def go() -> None:
        for t in times:
            scaler.look(mv, POLICY, t)
            await asyncio.sleep(0)  # let a start finish
            await asyncio.sleep(0)

    asyncio.run(go())


def test_up_after_the_window_one_at_a_time_up_to_max() -> None:
    seen: list[Event] = []
    scaler, mv = Autoscaler(lambda _mv, e: seen.append(e)), Version(depth=40)
    run_looks(scaler, mv, [0.0, 0.5])
    assert len(mv.live_workers) == 1  # pressure shorter than the window
    run_looks(scaler, mv, [1.0, 1.1, 2.1, 3.2, 4.3, 5.4])
    assert len(mv.live_workers) == 3  # max
    assert [e.action for e in seen] == ["up", "up"]
    assert (seen[0].workers_before, seen[0].workers_after) == (1, 2)
    assert "requests queued" in seen[0].reason


def test_a_long_wait_alone_scales_up() -> None:
    seen: list[Event] = []
    scaler, mv = Autoscaler(lambda _mv, e: seen.append(e)), Version(depth=1, wait=0.5)
    run_looks(scaler, mv, [10.0, 11.0])
    assert [e.action for e in seen] == ["up"] and "oldest waited 500 ms" in seen[0].reason


def test_down_after_the_cool_down_to_min() -> None:
    seen: list[Event] = []
    scaler = Autoscaler(lambda _mv, e: seen.append(e))
    mv = Version(workers=[W("9000"), W("9001"), W("9002")])
    run_looks(scaler, mv, [100.0, 102.0, 104.9])
    assert len(mv.live_workers) == 3
    run_looks(scaler, mv, [105.0])
    assert [w.id for w in mv.live_workers] == ["9000", "9001"]  # the newest was drained
    run_looks(scaler, mv, [106.0, 110.1, 120.0, 140.0])
    assert len(mv.live_workers) == 1  # min
    assert [e.action for e in seen] == ["down", "down"]


def test_busy_workers_or_a_queue_keep_them() -> None:
    scaler = Autoscaler(lambda _mv, _e: None)
    mv = Version(workers=[W("9000", inflight={1: 1}), W("9001", inflight={2: 1})], depth=1)
    run_looks(scaler, mv, [0.0, 10.0, 20.0])
    assert len(mv.live_workers) == 2


def test_off_when_max_equals_min_and_a_failed_start_is_an_event() -> None:
    seen: list[Event] = []
    scaler, mv = Autoscaler(lambda _mv, e: seen.append(e)), Version(max_workers=1, depth=99)
    run_looks(scaler, mv, [0.0, 5.0])
    assert not seen

    class Failing(Version):
        async def add_worker(self) -> Any:
            raise RuntimeError("no room on any GPU")

    fv = Failing(depth=99)
    run_looks(scaler, fv, [0.0, 2.0])
    failed = ("failed", "no room on any GPU; the next start waits 5 s (cool-down)")
    assert [(e.action, e.reason) for e in seen] == [failed]
    assert len(fv.live_workers) == 1
    assert scaler.describe_json(fv, POLICY)["events"][0]["action"] == "failed"
    # under the same pressure, no start (and no failed event) until a cool-down has passed
    run_looks(scaler, fv, [3.0, 4.5, 6.0, 7.9])
    assert len(seen) == 1
    run_looks(scaler, fv, [8.1, 9.2])  # then a full up window again
    assert [e.action for e in seen] == ["failed", "failed"]


def test_settings_from_config_properties(tmp_path: Path) -> None:
    from jupyter_torchserve.config import EngineConfig, load_ts_config

    path = tmp_path / "config.properties"
    path.write_text("jts_autoscale_cooldown=12.5\njts_autoscale_queue_depth=8\n")
    values = load_ts_config(path)
    assert values["autoscale_cooldown"] == 12.5 and values["autoscale_queue_depth"] == 8
    values.pop("_ignored", None)
    policy = Policy.from_config(EngineConfig(**values))
    assert (policy.cooldown, policy.queue_depth, policy.up_window) == (12.5, 8, 1.0)
