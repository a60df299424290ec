"""The Python API for scripts (no IPython needed) and the text/HTML views."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from _notebook_helpers import Pooled, engine, rgba_png, ts_env  # noqa: F401

from jupyter_torchserve import api, display
from jupyter_torchserve.deployment import deploy
from jupyter_torchserve.widgets import LiveStatus, Progress

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def close(a: Any, b: Any, tol: float = 1e-5) -> bool:
    import numpy as np

    return np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), atol=tol)


@pytest.fixture(scope="module")
def model() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def test_importable_without_ipython_magics() -> None:
    code = (
        "import sys, jupyter_torchserve.api, jupyter_torchserve.deployment; "
        "print('IPython.core.magic' in sys.modules)"
    )
    # this interpreter (the venv's): a bare `python` on PATH need not have our dependencies
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_deploy_snippets_run_on_every_protocol(engine: dict, model: Any) -> None:  # noqa: F811
    import torch

    x = torch.randn(2, 4)
    dep = deploy(model, "api_tiny", example=x, progress="none")
    assert dep.parity.ok and dep.parity.max_abs_diff < 1e-5
    want = model(x).tolist()
    assert close(dep.predict(x.tolist()), want)
    snippets = dep.snippets
    for key in ("curl", "curl_v1", "curl_v2"):
        out = subprocess.run(snippets[key], shell=True, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        body = json.loads(out.stdout)
        if key == "curl_v1":
            body = body["predictions"]
        elif key == "curl_v2":
            body = torch.tensor(body["outputs"][0]["data"]).reshape(2, 3).tolist()
        assert close(body, want), key
    # the management calls read the key when they run: it is never in the (saved) output
    assert dep.token and all(dep.token not in text for text in snippets.values())
    out = subprocess.run(snippets["curl_describe"], shell=True, capture_output=True, text=True)
    assert json.loads(out.stdout)[0]["modelName"] == "api_tiny", out.stderr
    ns: dict[str, Any] = {}
    exec(snippets["python_v2"], ns)  # prints the answer; must not raise
    text, html = repr(dep), dep._repr_html_()
    for needle in ("api_tiny", "/v1/models/api_tiny:predict", "/v2/models/api_tiny/infer"):
        assert needle in text and needle in html


def test_existing_name_replace_and_versions(engine: dict, model: Any) -> None:  # noqa: F811
    import torch

    x = torch.randn(1, 4)
    with pytest.raises(api.ModelExistsError, match="replace"):
        deploy(model, "api_tiny", example=x, progress="none")
    with pytest.raises(api.ModelExistsError, match="version 1.0 is already registered"):
        deploy(model, "api_tiny", version="1.0", example=x, progress="none")
    dep2 = deploy(model, "api_tiny", version="2.0", example=x, progress="none")
    assert not dep2.is_default and dep2.endpoints["predictions"].endswith("/api_tiny/2.0")
    assert dep2.parity.ok  # checked through the versioned route
    # replacing the default version while 2.0 exists hands the default role over and back
    torch.manual_seed(1)
    other = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    dep1 = deploy(other, "api_tiny", example=x, replace=True, progress="none")
    assert dep1.replaced and dep1.version == "1.0" and dep1.is_default
    assert close(api.predict("api_tiny", x.tolist()), other(x).tolist())
    assert "updated" in repr(api.set_default("api_tiny", "2.0"))
    assert api.scale("api_tiny", 2, version="2.0").data
    versions = api.describe("api_tiny", "all").versions
    assert {v["modelVersion"]: len(v["workers"]) for v in versions} == {"1.0": 1, "2.0": 2}
    listing = api.list_models()
    assert [r[1] for r in listing.table()[1] if r[0] == "api_tiny"] == ["1.0", "2.0"]
    api.unregister("api_tiny", "1.0")
    api.unregister("api_tiny")
    with pytest.raises(api.TorchServeError, match="404"):
        api.describe("api_tiny")


def double_postprocess(output):
    return (output * 2).tolist()


def test_hooks_parity(engine: dict) -> None:  # noqa: F811
    import torch

    lin = torch.nn.Linear(2, 2)
    hooks = {"postprocess": double_postprocess}
    # hooks are part of the served contract: in-kernel reference uses them too -> ok
    dep = deploy(lin, "api_hooks", handler=hooks, example=torch.ones(1, 2), progress="none")
    assert dep.parity.ok
    api.unregister("api_hooks")


def test_image_parity_with_resize_crop_image_size_and_alpha(engine: dict) -> None:  # noqa: F811
    """The in-kernel input is the handler's own decoding of the example, settings and all."""
    import torch

    torch.manual_seed(0)
    model = Pooled(1).eval()
    cfg = {"resize": 32, "center_crop": 30, "image_size": 28, "mean": [0.5], "std": [0.25]}
    dep = deploy(
        model,
        "api_rgba",
        handler="image_classifier",
        example=rgba_png(40, 36),  # RGBA, and neither 28 x 28 nor square
        handler_config={**cfg, "topk": 10},
        progress="none",
    )
    assert dep.schema["inputs"][0]["shape"] == [-1, 1, 28, 28]
    assert dep.parity.ok and dep.parity.max_abs_diff < 1e-5, dep.parity
    api.unregister("api_rgba")


def test_progress_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    p = Progress("Deploying m", ["one", "two"], mode="text")
    p.start()
    with p.step("one") as s:
        s["note"] = "fine"
    with pytest.raises(RuntimeError), p.step("two"):
        raise RuntimeError("boom")
    out = capsys.readouterr().out
    assert "Deploying m" in out and "✓ one" in out and "fine" in out and "✗ two failed" in out
    assert p.failed and "✓ one" in p.text()


def test_progress_widget_bundle_has_text(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[dict] = []
    import IPython.display as ipd

    monkeypatch.setattr(ipd, "display", lambda b, **kw: shown.append(b))
    monkeypatch.setattr(ipd, "update_display", lambda b, **kw: shown.append(b))
    p = Progress("Deploying w", ["a"], mode="widget")
    p.start()
    with p.step("a"):
        pass
    assert "application/vnd.jupyter.widget-view+json" in shown[-1]
    assert "✓ a" in shown[-1]["text/plain"]
    assert p._bar.value == 1 and p._bar.bar_style == "success"


def test_live_status_text_mode(capsys: pytest.CaptureFixture[str]) -> None:
    live = LiveStatus(lambda: display.Message("all good"), mode="text").show()
    assert "all good" in capsys.readouterr().out and not live.running


def test_views_render_html_and_text() -> None:
    desc = [
        {
            "modelName": "m",
            "modelVersion": "1.0",
            "modelUrl": "m.mar",
            "minWorkers": 1,
            "maxWorkers": 1,
            "batchSize": 4,
            "maxBatchDelay": 50,
            "workers": [{"id": "9000", "status": "READY", "pid": 1, "memoryUsage": 2_000_000}],
            "jobQueueStatus": {"pendingRequests": 0},
        }
    ]
    d = display.ModelDescription("m", desc)
    assert "2.0 MB" in repr(d) and "<table" in d._repr_html_() and "1/1 ready" in repr(d)
    lst = display.ModelList([{"modelName": "m", "modelUrl": "m.mar"}], {"m": desc})
    assert "m.mar" in repr(lst) and "<td" in lst._repr_html_()
    st = display.EngineStatus(None)
    assert "%torchserve start" in repr(st)
    # the values line up however long the engine's own keys are
    info = {"pid": 7, "inference_address": "http://127.0.0.1:8080"}
    st = display.EngineStatus(info, {"max_response_size": 6553500, "workers": 2})
    lines = repr(st).split("\n\n")[0].splitlines()[1:]
    _, rows = st.table()
    assert len(lines) == len(rows) == 5
    assert len({line.rindex(str(v)) for line, (_, v) in zip(lines, rows, strict=True)}) == 1
    m = display.Metrics('ts_inference_requests_total{model_name="m",model_version="1.0",} 3.0\n')
    assert m.value("ts_inference_requests_total", model_name="m") == 3.0
    assert "<b>&lt;x&gt;</b>" not in display.html_table(["a"], [["<x>"]])
