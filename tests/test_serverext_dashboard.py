"""The dashboard's history (rates and percentiles between two /metrics pages) and its routes.

The fast tests read two pages the real engine wrote (tests/data/engine-metrics-*.txt: 4
predictions answered, then 20 more and one request for an unknown model); the slow ones start
a real engine and a Jupyter server with the extension, whose sampler fills the history.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from _serverext_helpers import SERVER_CONFIG, RealEngine, predict
from tornado.httpclient import HTTPClientError

from jupyter_torchserve.prometheus import parse
from jupyter_torchserve.serverext.history import History, series, snapshot

DATA = Path(__file__).parent / "data"
BEFORE = (DATA / "engine-metrics-before.txt").read_text()
AFTER = (DATA / "engine-metrics-after.txt").read_text()


def test_rates_and_percentiles_between_two_real_pages() -> None:
    rows = series([snapshot(parse(BEFORE), 1000.0), snapshot(parse(AFTER), 1010.0)])
    (tp,) = rows["throughput"]
    assert tp["model"] == "mnist 1.0"
    assert tp["rps"] == pytest.approx(20 / 10)  # 24 - 4 answered, over 10 s
    assert tp["t"] == 1010_000
    lat = {r["q"]: r["ms"] for r in rows["latency"]}
    # of the 20 new answers 3 took 1-2.5 ms, 1 took 2.5-5 ms and 16 took 5-10 ms (the page's
    # cumulative buckets minus the earlier page's); linear within a bucket, as Prometheus'
    # histogram_quantile reads it: rank 10 and rank 19.8 both fall in the 5-10 ms bucket
    assert lat["p50"] == pytest.approx(5 + 5 * (10 - 4) / 16)
    assert lat["p99"] == pytest.approx(5 + 5 * (19.8 - 4) / 16)
    assert rows["errors"] == [{"t": 1010_000, "status": "404", "per_s": pytest.approx(0.1)}]
    assert rows["workers"] == [{"t": 1010_000, "model": "mnist 1.0", "workers": 1.0}]
    assert rows["queue"][0]["depth"] == 0.0
    assert rows["batch"][0]["mean"] == pytest.approx(1.0)  # no batching configured
    (cpu,) = rows["worker_cpu"]
    assert cpu["worker"] == "mnist 1.0 #9000"
    assert cpu["cores"] == pytest.approx((2.18 - 2.12) / 10)
    assert rows["worker_memory"][0]["mb"] == pytest.approx(4.0042496e08 / 2**20)


def test_a_counter_reset_gives_no_rate_rather_than_a_negative_one() -> None:
    """An engine restarted between two samples: its counters start again from zero."""
    rows = series([snapshot(parse(AFTER), 1000.0), snapshot(parse(BEFORE), 1005.0)])
    assert rows["throughput"] == []
    assert rows["latency"] == []
    assert rows["worker_cpu"] == []
    assert rows["workers"]  # gauges are still drawn


AUTOSCALE_AND_GPU = """\
# HELP jts_autoscale_events_total Autoscaler decisions: up, down, failed.
# TYPE jts_autoscale_events_total counter
jts_autoscale_events_total{action="up",model_name="mnist",model_version="1.0"} %s
# HELP jts_gpu_memory_used_bytes GPU memory in use.
# TYPE jts_gpu_memory_used_bytes gauge
jts_gpu_memory_used_bytes{gpu="0",name="NVIDIA H200"} 1073741824.0
# HELP jts_gpu_memory_total_bytes GPU memory in all.
# TYPE jts_gpu_memory_total_bytes gauge
jts_gpu_memory_total_bytes{gpu="0",name="NVIDIA H200"} 150323855360.0
"""


def test_autoscale_decisions_and_gpu_memory() -> None:
    """The families engine/metrics.py writes for the autoscaler and NVML, in its format."""
    a = snapshot(parse(BEFORE + AUTOSCALE_AND_GPU % "1.0"), 1000.0)
    b = snapshot(parse(AFTER + AUTOSCALE_AND_GPU % "3.0"), 1005.0)
    rows = series([a, b])
    assert rows["autoscale"] == [
        {"t": 1005_000, "model": "mnist 1.0", "action": "up", "count": 2.0}
    ]
    (gpu,) = rows["gpu_memory"]
    assert gpu["gpu"] == "GPU 0 (NVIDIA H200)"
    assert gpu["used_mb"] == 1024.0
    assert gpu["total_mb"] == 143360.0


def test_torchserve_page_gives_requests_per_second() -> None:
    """TorchServe 0.12 has no `jts_*` families: its request counter still gives req/s."""
    text = (DATA / "torchserve-0.12-metrics.txt").read_text()
    snap = snapshot(parse(text), 1000.0)
    assert snap.requests, "ts_inference_requests_total was not read"
    assert not snap.latency


def test_history_window_and_decisions() -> None:
    h = History(interval=5.0)
    h.add(snapshot(parse(BEFORE), 1000.0))
    h.add(snapshot(parse(AFTER), 1005.0))
    event = {"time": 1004.0, "action": "up", "workers_before": 1, "workers_after": 2}
    h.add_decisions("mnist", "1.0", [{**event, "reason": "8 requests queued for 2.0 s"}])
    h.add_decisions("mnist", "1.0", [{**event, "reason": "the same event, described again"}])
    view = h.view(5, now=1010.0)
    assert view["models"] == ["mnist 1.0"]
    assert len(view["series"]["throughput"]) == 1
    assert [d["reason"] for d in view["decisions"]] == ["8 requests queued for 2.0 s"]
    # an hour later the window is empty, but the route still answers
    assert h.view(5, now=1010.0 + 3600)["series"]["throughput"] == []
    with pytest.raises(ValueError, match="5, 15, 60"):
        h.view(7, now=1010.0)
    with pytest.raises(ValueError, match="positive"):
        History(interval=0)


# ------------------------------------------------------------------------------ real engine
@pytest.fixture(scope="module")
def real_engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    engine = RealEngine(tmp_path_factory.mktemp("engine")).start()
    yield engine
    engine.stop()


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {**SERVER_CONFIG, "JupyterTorchServe": {"dashboard_interval": 0.5}}


@pytest.fixture
def engine(real_engine: RealEngine, jp_serverapp: Any, jp_runtime_dir: Path) -> RealEngine:
    real_engine.copy_discovery_to(Path(jp_runtime_dir))
    return real_engine


@pytest.mark.slow
async def test_dashboard_route_shows_requests_after_some(jp_fetch: Any, engine: RealEngine) -> None:
    async def view() -> dict[str, Any]:
        resp = await jp_fetch("torchserve", "dashboard", params={"minutes": 5})
        return json.loads(resp.body)

    for _ in range(100):  # the sampler's first reading: the counts before our requests
        if (await view())["samples"] >= 1:
            break
        await asyncio.sleep(0.1)
    for _ in range(5):
        await predict(jp_fetch, "mnist", engine.png)
        await asyncio.sleep(0.3)
    await asyncio.sleep(1.2)  # two more samples after the last answer
    data = await view()
    assert data["minutes"] == 5 and data["samples"] >= 3
    assert "mnist 1.0" in data["models"]
    rows = data["series"]
    # every answer is counted once, in the interval it was answered in
    assert sum(r["requests"] for r in rows["throughput"]) == 5
    assert all(r["rps"] >= 0 for r in rows["throughput"])
    assert {r["q"] for r in rows["latency"]} == {"p50", "p99"}
    assert all(r["ms"] > 0 for r in rows["latency"])
    assert rows["workers"][-1]["workers"] == 1
    assert rows["worker_memory"][-1]["mb"] > 10
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("torchserve", "dashboard", params={"minutes": 7})
    assert err.value.code == 400
    assert "5, 15, 60" in json.loads(err.value.response.body)["message"]


@pytest.mark.slow
async def test_load_test_route_runs_the_bench(jp_fetch: Any, engine: RealEngine) -> None:
    body = json.dumps({"concurrency": [1, 2], "duration": 1})
    resp = await jp_fetch("torchserve", "models", "mnist", "loadtest", method="POST", body=body)
    data = json.loads(resp.body)
    assert [r["concurrency"] for r in data["rows"]] == [1, 2]
    for row in data["rows"]:
        assert row["errors"] == 0
        assert row["req_per_s"] > 0
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["engine_requests"] == row["requests"]  # the engine's own count agrees
    for bad, says in (({"concurrency": [0]}, "from 1 to"), ({"duration": 600}, "seconds")):
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch(
                "torchserve", "models", "mnist", "loadtest", method="POST", body=json.dumps(bad)
            )
        assert err.value.code == 400
        assert says in json.loads(err.value.response.body)["message"]
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("torchserve", "models", "nope", "loadtest", method="POST", body=body)
    assert err.value.code == 404
