"""TorchServe-era handlers run unchanged through the ``ts`` compat layer (issue 3 item 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _handler_helpers import (
    REPO_ROOT,
    digits_dataset,
    make_model_dir,
    png_bytes,
    request,
    save_torchscript,
    train_digits_classifier,
    write_manifest,
)
from PIL import Image

from jupyter_torchserve.handlers.compat import COMPAT_DIR, ensure_ts_importable
from jupyter_torchserve.handlers.service import load_service

pytestmark = pytest.mark.slow  # starts real processes

MNIST_MODEL_FILE = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)
        )

    def forward(self, x):
        return self.net(x)
"""

# TorchServe's examples/image_classifier/mnist/mnist_handler.py, with our own PIL-only
# image_processing (a plain module function, where the original uses torchvision).
MNIST_HANDLER = """
import numpy as np
import torch
from ts.torch_handler.image_classifier import ImageClassifier


def to_normalized_tensor(image):
    array = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return (torch.from_numpy(array)[None] - 0.1307) / 0.3081


class MNISTDigitClassifier(ImageClassifier):
    image_processing = to_normalized_tensor

    def postprocess(self, data):
        return data.argmax(1).tolist()
"""

RUN_IN_CLEAN_PROCESS = """
import importlib.util, json, sys
assert importlib.util.find_spec("ts") is None, "this test needs an environment without torchserve"
from jupyter_torchserve.handlers.service import RequestInput, load_service
svc = load_service(sys.argv[1], batch_size=len(sys.argv) - 2)
import ts
requests = [
    RequestInput(str(i), {}, [("body", "image/png", open(path, "rb").read())])
    for i, path in enumerate(sys.argv[2:])
]
print(json.dumps({
    "ts_file": ts.__file__,
    "handler": type(svc.handler_instance).__mro__[1].__module__,
    "predictions": [json.loads(o.body) for o in svc.predict(requests)],
}))
"""


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.pop("PYTHONSTARTUP", None)
    return env


def test_torchserve_mnist_example_layout_without_torchserve(tmp_path):
    mean, std = 0.1307, 0.3081
    trained = train_digits_classifier(mean=mean, std=std)
    model_dir = tmp_path / "mnist"
    model_dir.mkdir()
    (model_dir / "mnist.py").write_text(MNIST_MODEL_FILE)
    (model_dir / "mnist_handler.py").write_text(MNIST_HANDLER)
    torch.save({f"net.{k}": v for k, v in trained.state_dict().items()}, model_dir / "mnist_cnn.pt")
    write_manifest(
        model_dir,
        name="mnist",
        serialized="mnist_cnn.pt",
        handler="mnist_handler.py",
        modelFile="mnist.py",
    )
    images, targets = digits_dataset()
    picks = list(range(3, 1797, 180))  # 10 digits
    paths = []
    for i in picks:
        pixels = (images[i, 0].numpy() * 255).round().astype(np.uint8)
        path = tmp_path / f"digit{i}.png"
        path.write_bytes(png_bytes(Image.fromarray(pixels, "L")))
        paths.append(str(path))

    proc = subprocess.run(
        [sys.executable, "-c", RUN_IN_CLEAN_PROCESS, str(model_dir), *paths],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=str(tmp_path),
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(result["ts_file"]).is_relative_to(COMPAT_DIR)
    assert result["handler"] == "ts.torch_handler.image_classifier"
    predictions = result["predictions"]
    quantised = torch.stack(
        [torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32) / 255)[None] for p in paths]
    )
    with torch.no_grad():
        expected = trained((quantised - mean) / std).argmax(1).tolist()
    assert predictions == expected
    assert sum(p == int(targets[i]) for p, i in zip(predictions, picks, strict=True)) >= 8


FAKE_TS_CHECK = """
import json, sys
from jupyter_torchserve.handlers.compat import COMPAT_DIR, ensure_ts_importable, using_compat
from jupyter_torchserve.handlers.service import load_service
used = ensure_ts_importable()
import ts
svc = load_service(sys.argv[1])
print(json.dumps({"used": used, "compat_on_path": COMPAT_DIR in sys.path,
                  "fake": getattr(ts, "FAKE", False), "using_compat": using_compat()}))
"""


def test_a_real_ts_package_wins_over_the_compat_layer(tmp_path):
    fake = tmp_path / "site" / "ts"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("FAKE = True\n__version__ = '0.12.0'\n")
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "handler.py").write_text(
        "import ts\n\ndef handle(data, context):\n    return None if data is None else [ts.FAKE]\n"
    )
    write_manifest(model_dir, name="m", serialized="x.pt", handler="handler.py")
    env = _clean_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), str(REPO_ROOT)])
    proc = subprocess.run(
        [sys.executable, "-c", FAKE_TS_CHECK, str(model_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"used": False, "compat_on_path": False, "fake": True, "using_compat": False}


def test_ensure_ts_importable_in_this_process():
    assert ensure_ts_importable() is True  # no torchserve in the test environment
    import ts.context

    from jupyter_torchserve.handlers.context import Context

    assert ts.context.Context is Context


BASE_HANDLER_SUBCLASS = """
import torch
from ts.torch_handler.base_handler import BaseHandler


class JsonRows(BaseHandler):
    def preprocess(self, data):
        return torch.tensor([row["body"] for row in data], dtype=torch.float32)

    def postprocess(self, data):
        labels = [self.mapping[str(i)] for i in data.argmax(1).tolist()]
        return [{"label": l, "device": str(self.device), "ok": self.initialized} for l in labels]
"""


def test_base_handler_subclass_on_torchscript_with_mapping(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).eval()
    model_dir = tmp_path / "bh"
    model_dir.mkdir()
    save_torchscript(model, model_dir / "model.pt")
    (model_dir / "handler.py").write_text(BASE_HANDLER_SUBCLASS)
    (model_dir / "index_to_name.json").write_text(
        json.dumps({"0": ["n0", "left"], "1": ["n1", "right"]})
    )
    write_manifest(model_dir, name="bh", serialized="model.pt", handler="handler.py")
    svc = load_service(str(model_dir))
    handler = svc.handler_instance
    assert handler.map_location == "cpu" and handler.manifest["model"]["modelName"] == "bh"
    xs = [[1.0, 2.0, 3.0], [-3.0, 0.5, 2.0]]
    outputs = [json.loads(o.body) for o in svc.predict([request(x) for x in xs])]
    expected = ["left" if i == 0 else "right" for i in model(torch.tensor(xs)).argmax(1).tolist()]
    assert [o["label"] for o in outputs] == expected
    assert all(o["ok"] and o["device"] == "cpu" for o in outputs)
    names = {r["name"] for r in svc.context.metrics.drain()}
    assert {"ts_handler_inference", "HandlerTime", "PredictionTime"} <= names
    # explanations: header explain: True -> get_insights (Captum IG toward target 0, as
    # TorchServe; for a linear model that is exactly x * w[0])
    out = json.loads(svc.predict([request(xs[0], headers={"explain": "True"})])[0].body)
    assert np.allclose(out, [np.asarray(xs[0]) * model.weight[0].detach().numpy()], atol=1e-6)
    assert svc.describe() is None


def test_base_handler_loads_model_file_with_state_dict(tmp_path):
    model_dir = tmp_path / "eager"
    model_dir.mkdir()
    (model_dir / "net_def.py").write_text(
        "import torch\n\nclass Tiny(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = torch.nn.Linear(2, 2)\n"
        "    def forward(self, x):\n        return self.fc(x)\n"
    )
    torch.manual_seed(0)
    fc = torch.nn.Linear(2, 2)
    torch.save({"fc.weight": fc.weight.data, "fc.bias": fc.bias.data}, model_dir / "w.pt")
    (model_dir / "h.py").write_text(
        "import torch\nfrom ts.torch_handler.base_handler import BaseHandler\n\n"
        "class H(BaseHandler):\n"
        "    def preprocess(self, data):\n"
        "        return torch.tensor([r['body'] for r in data])\n"
    )
    write_manifest(
        model_dir, name="eager", serialized="w.pt", handler="h.py", modelFile="net_def.py"
    )
    svc = load_service(str(model_dir))
    out = json.loads(svc.predict([request([1.0, 2.0])])[0].body)
    assert np.allclose(out, fc(torch.tensor([1.0, 2.0])).detach().numpy(), atol=1e-6)


def test_vision_handler_accepts_any_image_processing_callable(tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    variants = {
        "function": "image_processing = to_tensor",  # a plain function is not bound as a method
        "static": "image_processing = staticmethod(to_tensor)",
        "method": "def image_processing(self, image):\n        return to_tensor(image)",
        "callable": "image_processing = functools.partial(to_tensor)",  # like a Compose object
    }
    expected = torch.softmax(model(torch.full((1, 1, 2, 2), 3.0)), 1)[0].detach()
    top = int(expected.argmax())
    for name, body in variants.items():
        model_dir = tmp_path / name
        model_dir.mkdir()
        save_torchscript(model, model_dir / "model.pt")
        source = (
            "import functools\nimport numpy as np\nimport torch\n"
            "from ts.torch_handler.image_classifier import ImageClassifier\n\n\n"
            "def to_tensor(image):\n"
            "    return torch.from_numpy(np.asarray(image.convert('L'), dtype=np.float32))[None]\n\n\n"
            f"class Handler(ImageClassifier):\n    topk = 2\n    {body}\n"
        )
        (model_dir / "h.py").write_text(source)
        write_manifest(model_dir, name=name, serialized="model.pt", handler="h.py")
        svc = load_service(str(model_dir))
        image = png_bytes(Image.new("L", (2, 2), 3))
        out = json.loads(svc.predict([request(image, "image/png")])[0].body)
        assert len(out) == 2, name
        assert out[str(top)] == pytest.approx(float(expected[top])), name


def test_ts_utils_util_helpers(tmp_path):
    ensure_ts_importable()
    from ts.utils import util

    assert util.map_class_to_label([[0.9, 0.1]], {"0": "a", "1": "b"}, [[1, 0]]) == [
        {"b": 0.9, "a": 0.1}
    ]
    assert util.map_class_to_label([[0.7, 0.3]]) == [{"0": 0.7, "1": 0.3}]
    path = tmp_path / "index_to_name.json"
    path.write_text(json.dumps({"object_type_names": ["x", "y"]}))
    assert util.load_label_mapping(str(path)) == {"0": "x", "1": "y"}
    assert util.load_label_mapping(str(tmp_path / "missing.json")) is None
    err = util.PredictionException("nope", 418)
    assert (err.message, err.error_code, str(err)) == ("nope", 418, "nope : 418")
    (tmp_path / "c.yaml").write_text("a: 1\n")
    pytest.importorskip("yaml")
    assert util.get_yaml_config(str(tmp_path / "c.yaml")) == {"a": 1}


def test_builtin_handler_archive_runs_with_ts_names(tmp_path):
    """A TorchServe archive naming the built-in `image_classifier` is served by ours."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3)).eval()
    model_dir = make_model_dir(tmp_path, model, handler="image_classifier")
    (model_dir / "MAR-INF" / "jupyter_torchserve.json").unlink()  # a plain TorchServe archive
    (model_dir / "index_to_name.json").write_text(json.dumps({"0": "a", "1": "b", "2": "c"}))
    svc = load_service(str(model_dir))
    image = png_bytes(Image.new("RGB", (4, 4), (10, 200, 30)))
    out = json.loads(svc.predict([request(image, "image/png")])[0].body)
    assert set(out) == {"a", "b", "c"}
