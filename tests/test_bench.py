"""`bench` against a real engine: its figures agree with the engine's own request counter,
its error count is honest when the model fails, the worker count is restored, the picture is
drawn, and the magic runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _engine_helpers import probe_mar
from _notebook_helpers import engine, ts_env  # noqa: F401

from jupyter_torchserve import api, prometheus
from jupyter_torchserve.client import Client

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def client(engine: dict, ts_env: dict) -> Client:  # noqa: F811
    store = Path(ts_env["config"]["model_store"])
    store.mkdir(parents=True, exist_ok=True)
    probe_mar(store, "bprobe")
    c = Client.from_info(engine, timeout=60)
    c.register("bprobe-1.0.mar", initial_workers=1, batch_size=4, max_batch_delay=5)
    return c


def engine_count(c: Client, name: str) -> float:
    text = c.metrics(["ts_inference_requests_total"])
    return sum(
        v
        for n, labels, v in prometheus.samples(text)
        if n == "ts_inference_requests_total" and prometheus.model_of(labels) == name
    )


def test_figures_agree_with_the_engines_counter(client: Client) -> None:
    before = engine_count(client, "bprobe")
    r = api.bench("bprobe", {"echo": 1}, concurrency=[1, 4], duration=1.5, progress=False, c=client)
    after = engine_count(client, "bprobe")
    assert [lv.concurrency for lv in r.levels] == [1, 4]
    for lv in r.levels:
        assert lv.requests > 10 and lv.errors == 0
        assert lv.statuses == {"200": lv.requests}
        assert lv.engine_requests == lv.requests  # the engine counted exactly what we got
        assert lv.rps > 0 and lv.p50_ms <= lv.p90_ms <= lv.p99_ms
        assert 0 < lv.generator_cpu_cores < 2 and lv.server_cpu_cores > 0
        assert sum(lv.batch_sizes.values()) >= 1
    assert after - before == sum(lv.requests for lv in r.levels)
    assert r.png()[:4] == b"\x89PNG"


def test_request_count_mode_sends_exactly_that_many(client: Client) -> None:
    r = api.bench("bprobe", {"echo": 2}, concurrency=[3], requests=50, progress=False, c=client)
    (lv,) = r.levels
    assert lv.requests == 50 and lv.engine_requests == 50 and lv.errors == 0


def test_errors_are_counted_when_the_model_fails(client: Client) -> None:
    r = api.bench(
        "bprobe", {"raise": "bench"}, concurrency=[2], requests=20, progress=False, c=client
    )
    (lv,) = r.levels
    assert lv.requests == 20 and lv.errors == 20
    assert not any(k.startswith("2") for k in lv.statuses), lv.statuses
    assert "errors" in repr(r) and "×20" in repr(r)
    # the engine keeps serving afterwards
    assert client.predict("bprobe", b'{"echo": 3}').status == 200


def test_worker_counts_are_tried_and_restored(client: Client) -> None:
    r = api.bench(
        "bprobe",
        {"echo": 4},
        concurrency=[2],
        requests=30,
        workers=[1, 2],
        slo_ms=10_000,
        progress=False,
        c=client,
    )
    assert [(lv.workers, lv.concurrency) for lv in r.levels] == [(1, 2), (2, 2)]
    assert r.recommended_workers()[0] == 1
    assert [ax.get_title() for ax in r.figure().axes][-1] == "Scaling curve"
    d = client.describe("bprobe")[0]
    assert (d["minWorkers"], d["maxWorkers"], len(d["workers"])) == (1, 1, 1)


def test_bad_arguments_are_a_clear_error(client: Client) -> None:
    with pytest.raises(api.TorchServeError, match="protocol must be one of"):
        api.bench("bprobe", {}, protocol="smtp", progress=False, c=client)
    with pytest.raises(api.TorchServeError, match="concurrency must be"):
        api.bench("bprobe", {}, concurrency=[0], progress=False, c=client)
    with pytest.raises(api.TorchServeError):
        api.bench("nosuchmodel", {}, requests=1, progress=False, c=client)


def test_magic_runs_a_bench(client: Client, capsys: pytest.CaptureFixture[str]) -> Any:
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_torchserve")
    ip.user_ns["body"] = {"echo": 5}
    res = ip.run_cell(
        "r = %torchserve bench bprobe --data body --concurrency 1,2 --requests 20",
        store_history=False,
    )
    assert res.success
    r = ip.user_ns["r"]
    assert [lv.requests for lv in r.levels] == [20, 20]
    assert "2 connections: " in capsys.readouterr().out  # the text-mode progress lines
