"""The TorchServe-compatible Context and its metrics cache."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from jupyter_torchserve.handlers.context import Context, RequestProcessor, read_model_yaml_config
from jupyter_torchserve.handlers.metrics import MetricsCache


def _context(tmp_path, manifest=None, **kwargs) -> Context:
    return Context("m", str(tmp_path), manifest, 4, None, "0.12.0", True, **kwargs)


def test_system_properties_have_torchserve_keys(tmp_path):
    ctx = Context("mnist", str(tmp_path), {"model": {}}, 8, 1, "0.12.0", False)
    assert ctx.model_name == "mnist"
    assert ctx.system_properties == {
        "model_dir": str(tmp_path),
        "gpu_id": 1,
        "batch_size": 8,
        "server_name": "MMS",
        "server_version": "0.12.0",
        "limit_max_image_pixels": False,
    }
    assert _context(tmp_path).system_properties["gpu_id"] is None


def test_request_headers_and_response_api(tmp_path):
    ctx = _context(tmp_path)
    ctx.request_ids = {0: "a", 1: "b"}
    ctx.request_processor = [
        RequestProcessor({"body": {"content-type": "image/png"}, "explain": "True"}),
        RequestProcessor({"x-custom": "1"}),
    ]
    assert ctx.get_request_id() == "a" and ctx.get_request_id(1) == "b"
    assert ctx.get_request_header(0, "explain") == "True"
    assert ctx.get_request_header(0, "body") == {"content-type": "image/png"}
    assert ctx.get_request_header(1, "explain") is None
    assert ctx.get_all_request_header(1) == {"x-custom": "1"}

    ctx.set_response_content_type(1, "text/csv")
    ctx.set_response_status(201, "Created", 1)
    ctx.set_response_header(1, "x-out", "yes")
    assert ctx.get_response_content_type(1) == "text/csv"
    assert ctx.get_response_status(1) == (201, "Created")
    assert ctx.get_response_headers(1) == {"content-type": "text/csv", "x-out": "yes"}
    assert ctx.get_response_status(0) == (200, None)
    ctx.set_all_response_status(500, "boom")
    assert ctx.get_response_status(0) == (500, "boom")


def test_metrics_cache_records_values_the_worker_can_read(tmp_path):
    ctx = _context(tmp_path)
    assert isinstance(ctx.metrics, MetricsCache)
    ctx.metrics.request_ids = {0: "req-1"}
    ctx.metrics.add_counter("Hits", 2, 0)
    ctx.metrics.add_time("Step", 12.5, None, "ms")
    ctx.metrics.add_size("Buf", 3.0)
    ctx.metrics.add_percent("Util", 50)
    ctx.metrics.add_metric("Custom", 1.5, "items", dimensions=[("Kind", "x")])
    records = ctx.metrics.drain()
    assert [(r["name"], r["value"], r["unit"]) for r in records] == [
        ("Hits", 2.0, "count"),
        ("Step", 12.5, "ms"),
        ("Buf", 3.0, "MB"),
        ("Util", 50.0, "percent"),
        ("Custom", 1.5, "items"),
    ]
    assert records[0]["request_id"] == "req-1"
    assert records[4]["dimensions"] == {"Kind": "x", "ModelName": "m"}
    assert ctx.metrics.drain() == []
    with pytest.raises(TypeError):
        ctx.metrics.add_counter("Bad", "1")
    with pytest.raises(ValueError):
        ctx.metrics.add_time("Bad", 1, None, "parsecs")


def test_model_yaml_config_is_read_from_the_manifest_config_file(tmp_path):
    pytest.importorskip("yaml")
    (tmp_path / "cfg.yaml").write_text("minWorkers: 2\nhandler:\n  topk: 3\n")
    manifest = {"model": {"configFile": "cfg.yaml"}}
    ctx = _context(tmp_path, manifest)
    assert ctx.model_yaml_config == {"minWorkers": 2, "handler": {"topk": 3}}
    assert _context(tmp_path, {"model": {}}).model_yaml_config == {}


def test_model_yaml_config_without_pyyaml_warns(tmp_path, monkeypatch, caplog):
    (tmp_path / "cfg.yaml").write_text("minWorkers: 2\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # makes `import yaml` fail
    with caplog.at_level(logging.WARNING):
        config = read_model_yaml_config(str(tmp_path), {"model": {"configFile": "cfg.yaml"}})
    assert config == {}
    assert "PyYAML is not installed" in caplog.text


def test_streaming_hook(tmp_path):
    ctx = _context(tmp_path)
    ctx.request_ids = {0: "a"}
    with pytest.raises(RuntimeError, match="streaming is not available"):
        ctx.send_intermediate(["x"])
    sent = []
    ctx._send_intermediate = lambda outputs, ids, message, code: sent.append((outputs, ids, code))
    ctx.send_intermediate(["x"], "partial", 200)
    assert sent == [(["x"], {0: "a"}, 200)]
    json.dumps(ctx.system_properties)  # plain data, loggable
