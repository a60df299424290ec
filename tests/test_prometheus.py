"""A `/metrics` page read with prometheus_client's parser: our engine's and TorchServe 0.12's.

TorchServe 0.12 ends each label set with a trailing comma (`hostname="vm",}`); a parser that
gets it wrong loses every frontend counter. The fast tests read a page as TorchServe wrote
it; the slow ones fetch the page of a running engine and of a running TorchServe 0.12.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _torchserve_helpers import TorchServe, register, skip_reason

from jupyter_torchserve.client import Client
from jupyter_torchserve.prometheus import parse
from jupyter_torchserve.serverext.metrics import summarize

#: The whole page of a TorchServe 0.12 (metrics_mode=prometheus) after 2 requests to `probe`,
#: as `test_torchserve_012s_page` below fetched it on the development machine.
TORCHSERVE_PAGE = (Path(__file__).parent / "data" / "torchserve-0.12-metrics.txt").read_text()


def test_torchserve_label_sets_with_a_trailing_comma() -> None:
    assert ",} " in TORCHSERVE_PAGE
    families = {f["name"]: f for f in parse(TORCHSERVE_PAGE)}
    (sample,) = families["ts_inference_requests"]["samples"]
    assert sample == {
        "name": "ts_inference_requests_total",
        "labels": {"model_name": "probe", "model_version": "default", "hostname": "vm"},
        "value": 2.0,
    }
    assert families["ts_inference_requests"]["type"] == "counter"
    (backend,) = families["PredictionTime"]["samples"]
    assert backend["labels"] == {"ModelName": "probe", "Level": "Model", "Hostname": "vm"}
    assert families["GPUUtilization"]["samples"] == []  # a family with no samples yet
    stats = summarize(list(families.values()))["models"]["probe"]
    assert stats["requests"] == 2
    assert stats["latency_ms_mean"] == pytest.approx(74898.464 / 1000 / 2)


def test_values_json_cannot_carry_become_none() -> None:
    page = '# TYPE g gauge\ng{model_name="m"} NaN\ng{model_name="n"} +Inf\ng 1\n'
    (family,) = parse(page)
    assert [s["value"] for s in family["samples"]] == [None, None, 1.0]


def test_a_malformed_page_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse('ts_x{model_name="m" 1\n')


def _probe_page_checks(text: str) -> None:
    families = {f["name"]: f for f in parse(text)}
    counted = [
        s
        for s in families["ts_inference_requests"]["samples"]
        if s["labels"].get("model_name") == "probe"
    ]
    assert sum(s["value"] for s in counted) == 2, text
    assert summarize(list(families.values()))["models"]["probe"]["requests"] == 2


@pytest.mark.slow
def test_our_engines_page(tmp_path: Path) -> None:
    from _engine_helpers import model_store, running_engine  # imports torch

    with running_engine(tmp_path, model_store=model_store(tmp_path, "probe")) as (_, client):
        client.register("probe-1.0.mar", initial_workers=1)
        for _ in range(2):
            client.predict("probe", {"echo": 1})
        _probe_page_checks(client.metrics())


@pytest.mark.slow
@pytest.mark.torchserve
@pytest.mark.timeout(600)
@pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
def test_torchserve_012s_page(tmp_path: Path) -> None:
    """The same calls through our `Client`, against TorchServe 0.12 itself."""
    from _engine_helpers import model_store  # imports torch

    store = model_store(tmp_path, "probe")
    server = TorchServe(tmp_path / "ts", store)
    server.config.write_text(server.config.read_text() + "metrics_mode=prometheus\n")
    try:
        server.start()
        register(server.management, "probe-1.0.mar", "probe")
        client = Client(server.inference, server.management, server.metrics, timeout=120)
        for _ in range(2):
            client.predict("probe", {"echo": 1})
        text = client.metrics()
        print(text)
        assert ",} " in text  # TorchServe's trailing comma, which the parser must accept
        _probe_page_checks(text)
    finally:
        server.stop()
