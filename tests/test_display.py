"""The views' readings of engine answers, in-process: Prometheus pages of both servers."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from jupyter_torchserve import api, display

# TorchServe 0.12 with metrics_mode=prometheus, as observed (shared/notes/torchserve-api.md,
# section 6): HELP/TYPE lines, and every label set ends with a trailing comma.
TORCHSERVE_PAGE = """\
# HELP ts_inference_requests_total Total number of inference requests.
# TYPE ts_inference_requests_total counter
ts_inference_requests_total{uuid="2b1c",model_name="mnist",model_version="default",hostname="vm",} 6.0
ts_inference_requests_total{uuid="2b1c",model_name="other",model_version="default",hostname="vm",} 1.0
# HELP ts_inference_latency_microseconds Cumulative inference duration in microseconds
# TYPE ts_inference_latency_microseconds counter
ts_inference_latency_microseconds{uuid="2b1c",model_name="mnist",model_version="default",hostname="vm",} 5123.4
"""


def test_torchserve_page_with_trailing_commas() -> None:
    m = display.Metrics(TORCHSERVE_PAGE, model="mnist")
    assert m.value("ts_inference_requests_total", model_name="mnist") == 6.0
    # the page's own name: prometheus_client alone would call it ..._microseconds_total
    assert m.value("ts_inference_latency_microseconds") == pytest.approx(5123.4)
    rows = m.table()[1]
    assert [r[0] for r in rows] == [
        "ts_inference_requests_total",
        "ts_inference_latency_microseconds",
    ]
    assert "hostname" not in rows[0][1] and "model_name=mnist" in rows[0][1]


def test_prometheus_client_page_as_our_engine_writes_it() -> None:
    """Our engine renders with prometheus_client's generate_latest: counters and histograms."""
    registry = CollectorRegistry()
    requests = Counter(
        "ts_inference_requests",
        "Total number of inference requests.",
        ["model_name", "model_version", "hostname"],
        registry=registry,
    )
    latency = Histogram(
        "jts_inference_latency_seconds", "latency", ["model_name"], registry=registry
    )
    requests.labels("mnist", "1.0", "vm").inc(3)
    latency.labels("mnist").observe(0.01)
    m = display.Metrics(generate_latest(registry).decode())
    assert m.value("ts_inference_requests_total", model_name="mnist") == 3.0
    assert m.value("jts_inference_latency_seconds_count") == 1.0
    shown = {r[0] for r in m.table()[1]}
    assert "ts_inference_requests_total" in shown
    assert not any(name.endswith(("_bucket", "_created")) for name in shown)


def test_a_page_that_is_not_prometheus_is_refused() -> None:
    with pytest.raises(ValueError):
        display.Metrics("<html>not metrics</html>")
    # what api.metrics makes of it: one clean message for the cell
    with pytest.raises(api.TorchServeError, match="ValueError"), api.user_errors():
        display.Metrics("<html>not metrics</html>")
