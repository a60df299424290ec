"""``%torchserve metrics`` reads the real pages: our engine's, and a real TorchServe 0.12's.

The same small archive is registered in both and asked once; each server's ``/metrics`` page
is then read with :class:`jupyter_torchserve.display.Metrics` (prometheus_client's parser),
which must find the request under TorchServe's own sample names. TorchServe counts requests
only with ``metrics_mode=prometheus``, so that is set here. Skips where TorchServe's venv or
Java is missing, as the other compatibility tests do.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import torch
from _torchserve_helpers import TorchServe, engine_beside, predict, register, skip_reason

from jupyter_torchserve import display
from jupyter_torchserve.archive import archive

SKIP = skip_reason()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.torchserve,
    pytest.mark.skipif(SKIP is not None, reason=SKIP or ""),
    pytest.mark.timeout(600),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store")
    torch.manual_seed(0)
    archive(
        torch.nn.Linear(3, 2),
        "tiny",
        example_inputs=torch.ones(1, 3),
        export_path=str(path),
        format="torchscript",
        preflight=False,
    )
    return path


@pytest.fixture(scope="module")
def torchserve(tmp_path_factory: pytest.TempPathFactory, store: Path) -> Iterator[TorchServe]:
    with TorchServe(
        tmp_path_factory.mktemp("torchserve"), store, "metrics_mode=prometheus"
    ) as server:
        yield server


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, store: Path) -> Iterator[dict[str, Any]]:
    with engine_beside(tmp_path_factory.mktemp("engine"), store) as info:
        yield info


def page_after_one_request(inference: str, management: str, metrics: str) -> display.Metrics:
    register(management, "tiny.mar", "tiny")
    r = predict(inference, "tiny", json=[[1.0, 2.0, 3.0]])
    assert r.status_code == 200, r.text
    return display.Metrics(requests.get(f"{metrics}/metrics", timeout=30).text, model="tiny")


def test_torchserve_page(torchserve: TorchServe) -> None:
    m = page_after_one_request(torchserve.inference, torchserve.management, torchserve.metrics)
    assert ",}" in m.text  # the trailing comma the parser must accept
    assert m.value("ts_inference_requests_total", model_name="tiny") == 1.0
    # a counter without the _total suffix keeps its name (what Prometheus stores)
    assert m.value("ts_inference_latency_microseconds", model_name="tiny") > 0
    assert "ts_inference_requests_total" in repr(m)


def test_our_engine_page(engine: dict[str, Any]) -> None:
    m = page_after_one_request(
        engine["inference_address"], engine["management_address"], engine["metrics_address"]
    )
    assert m.value("ts_inference_requests_total", model_name="tiny") == 1.0
    assert m.value("ts_inference_latency_microseconds", model_name="tiny") > 0
    assert m.value("jts_inference_latency_seconds_count", model_name="tiny") == 1.0


def test_our_page_lists_torchserves_frontend_families_with_their_types(
    torchserve: TorchServe, engine: dict[str, Any]
) -> None:
    """Side by side: every family TorchServe's frontend writes (Requests2XX/4XX/5XX, the
    microsecond counters, the host gauges) is on our page, with TorchServe's TYPE and HELP
    lines and label names, and the worker and backend families (WorkerLoadTime,
    WorkerThreadTime, HandlerTime, PredictionTime) have samples on both after the model
    loaded and answered, under the same label names."""
    from test_frontend_metrics import NOT_OURS, shape

    for base in (torchserve.inference, engine["inference_address"]):
        assert requests.get(f"{base}/ping", timeout=30).status_code == 200
        assert requests.post(f"{base}/predictions/nope", timeout=30).status_code == 404
    theirs = shape(requests.get(f"{torchserve.metrics}/metrics", timeout=30).text)
    ours = shape(requests.get(f"{engine['metrics_address']}/metrics", timeout=30).text)
    assert "Requests2XX" in theirs and "Requests4XX" in theirs
    for name, (help_, kind, labels) in theirs.items():
        if name in NOT_OURS:
            continue
        assert name in ours and ours[name][:2] == (help_, kind), name
        if labels and ours[name][2]:
            assert ours[name][2] == labels, name
    worker_families = ("WorkerLoadTime", "WorkerThreadTime", "HandlerTime", "PredictionTime")
    for name in worker_families:
        assert theirs[name][2], f"TorchServe wrote no {name} sample"
        assert ours[name][2] == theirs[name][2], name
    page = display.Metrics(requests.get(f"{engine['metrics_address']}/metrics", timeout=30).text)
    assert page.value("WorkerLoadTime", WorkerName="W-9000-tiny_1.0") > 0
    assert page.value("HandlerTime", ModelName="tiny") > 0
    assert page.value("PredictionTime", ModelName="tiny") >= page.value(
        "HandlerTime", ModelName="tiny"
    )
