"""%torchserve in a real ipykernel: widget progress, and the engine outliving a kernel restart."""

from __future__ import annotations

from typing import Any

import pytest
from _notebook_helpers import KernelSession, engine, plain, ts_env  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SETUP = """
%load_ext jupyter_torchserve
import torch
torch.manual_seed(0)
lin = torch.nn.Linear(3, 2)
x = torch.ones(1, 3)
"""


@pytest.fixture(scope="module")
def kernel(engine: dict, ts_env: dict) -> Any:  # noqa: F811
    # widget progress: the kernel must not inherit the tests' forced text mode
    k = KernelSession(env={"JUPYTER_TORCHSERVE_PROGRESS": ""}, cwd=str(ts_env["root"]))
    yield k
    k.close()


def test_deploy_in_kernel_shows_widget_with_text_fallback(kernel: KernelSession) -> None:
    assert kernel.run(SETUP)["status"] == "ok"
    out = kernel.run("%torchserve deploy lin --name kernel_lin --example x")
    assert out["status"] == "ok", out["error"]
    bundles = out["data"]
    widgets = [b for b in bundles if "application/vnd.jupyter.widget-view+json" in b]
    assert widgets, "progress is shown as a widget in a kernel"
    # the same display carries an up-to-date text rendering for nbconvert/terminals
    final_progress = plain(widgets[-1])
    assert "✓ parity check" in final_progress and "Served kernel_lin" in final_progress
    result = bundles[-1]
    assert "text/html" in result and "Serving kernel_lin" in result["text/html"]
    assert "kserve v2" in plain(result)


def test_bad_argument_in_kernel_is_a_usage_error(kernel: KernelSession) -> None:
    out = kernel.run("%torchserve scale kernel_lin --workers two")
    assert out["status"] == "error"
    # IPython prints a UsageError as one line on stderr, with no traceback
    assert "UsageError" in out["stderr"] and "invalid int value" in out["stderr"]
    assert "Traceback" not in out["stderr"] + out["stdout"]


def test_export_of_a_served_model_in_kernel(kernel: KernelSession, ts_env: dict) -> None:  # noqa: F811
    out = kernel.run("%torchserve export kernel_lin --to kserve --out bundle")
    assert out["status"] == "ok", out["error"]
    text = plain(out["data"][-1])
    assert "Exported kernel_lin (1.0) for kserve" in text and "kubectl apply" in text
    bundle = ts_env["root"] / "bundle"
    # the served archive leaves unchanged, with what is served in the model snapshot
    served = next((ts_env["root"] / "store").glob("kernel_lin*.mar"))
    assert (bundle / "model-store" / "kernel_lin.mar").read_bytes() == served.read_bytes()
    assert (
        '"kernel_lin":{"1.0":{"defaultVersion":true'
        in (bundle / "config" / "config.properties").read_text()
    )
    # the result is the Bundle object, at hand as `_` for code
    out = kernel.run("print(sorted(str(f) for f in _.files))")
    assert "model-store/kernel_lin.mar" in out["stdout"], out
    out = kernel.run("%torchserve export no_such_model --to t9k")
    assert out["status"] == "error"
    # the engine's one-line answer, and none of our frames
    shown = "\n".join(out["error"]["traceback"])
    assert out["error"]["ename"] == "TorchServeError"
    assert "ModelNotFound" in shown and "no_such_model" in shown
    assert "Traceback" not in shown + out["stderr"] + out["stdout"]


def test_live_status_refreshes_without_blocking(kernel: KernelSession) -> None:
    out = kernel.run("%torchserve status --live --interval 0.3 --duration 30")
    assert out["status"] == "ok"
    assert any("application/vnd.jupyter.widget-view+json" in b for b in out["data"])
    # the kernel is free while the view refreshes in its thread
    out = kernel.run("import time; time.sleep(1.5); print(_torchserve_live.refreshes)")
    assert int(out["stdout"].strip()) >= 3
    out = kernel.run("_torchserve_live.stop(); time.sleep(0.6); print(_torchserve_live.running)")
    assert out["stdout"].strip() == "False"


EXPLAIN_SETUP = """
import numpy as np
from torch import nn
from jupyter_torchserve.examples import mnist
torch.manual_seed(0)
cnn = nn.Sequential(
    nn.Conv2d(1, 4, 5, stride=2), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 12 * 12, 10)
).eval()
pixels = (np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8)
open("kernel_digit.png", "wb").write(mnist.png_bytes(pixels))
example = open("kernel_digit.png", "rb").read()
norm = {"mean": mnist.MEAN, "std": mnist.STD}
"""


def test_explain_shows_a_png_html_and_a_widget_that_asks_the_engine_again(
    kernel: KernelSession,
) -> None:
    assert kernel.run(EXPLAIN_SETUP)["status"] == "ok"
    out = kernel.run(
        "%torchserve deploy cnn --name kernel_cnn --handler image_classifier"
        " --example example --handler-config norm"
    )
    assert out["status"] == "ok", out["error"]
    out = kernel.run("%torchserve explain kernel_cnn kernel_digit.png")
    assert out["status"] == "ok", out["error"]
    shown = out["data"][-1]
    assert {"image/png", "text/html", "application/vnd.jupyter.widget-view+json"} <= set(shown)
    assert "explained toward" in shown["text/html"] and "round trip" in shown["text/html"]
    out = kernel.run(
        "p = _\n"
        "before = p.attributions.clone()\n"
        "other = p.choices()[1][1]\n"
        "p.widget().children[0].value = other\n"
        "print(p.target == other, len(p.history), bool((p.attributions != before).any()),"
        " tuple(p.attributions.shape))"
    )
    assert out["status"] == "ok", out["error"]
    assert out["stdout"].split() == ["True", "2", "True", "(1,", "28,", "28)"]
    assert "unregistered" in plain(kernel.run("%torchserve unregister kernel_cnn")["data"][-1])


def test_kernel_restart_keeps_engine_and_models(kernel: KernelSession, engine: dict) -> None:  # noqa: F811
    kernel.restart()
    out = kernel.run("%load_ext jupyter_torchserve\n%torchserve status")
    assert out["status"] == "ok", out["error"]
    text = plain(out["data"][-1])
    assert str(engine["pid"]) in text and "kernel_lin" in text
    out = kernel.run("%torchserve predict kernel_lin --data '[[1.0, 1.0, 1.0]]'")
    assert out["status"] == "ok", out["error"]
    assert "[[" in plain(out["data"][-1])
    assert "unregistered" in plain(kernel.run("%torchserve unregister kernel_lin")["data"][-1])
