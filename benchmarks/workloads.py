"""The three benchmark workloads, made in code (no downloads).

Each workload is a TorchScript model, a payload (the exact bytes wrk sends) and a handler.
The handler is ONE file, `bench_handler.py`, written into every archive; it imports only
the standard library, torch, numpy and PIL and defines exactly one class with
`initialize(context)` / `handle(data, context)`, so TorchServe 0.12 and our engine load the
same archive byte for byte and run the same pre/post-processing:

    decode (JSON or PNG) -> tensor -> model (whole batch at once) -> argmax / top-k -> dict

Archives use torch-model-archiver 0.12's layout: a zip with `MAR-INF/MANIFEST.json`, the
serialized file and the handler at the root.

    tiny   Linear(10, 10) on a JSON list of 10 floats       (application/json)
    mnist  classic MNIST CNN on a 28x28 grayscale PNG        (image/png, raw body)
    resnet ResNet-18-like CNN (widths 32..256) on a 64x64 RGB PNG  (image/png, raw body)
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from jupyter_torchserve.examples.mnist import Net as MnistNet  # pytorch/examples' MNIST CNN

WORKLOADS = ("tiny", "mnist", "resnet")

HANDLER_FILE = "bench_handler.py"
CONFIG_FILE = "bench_workload.json"

# The handler shipped in every archive. Kept as text so the archive is self-contained.
HANDLER_SOURCE = '''"""Benchmark handler: identical for TorchServe 0.12 and jupyter_torchserve."""

import io
import json
import os

import numpy as np
import torch
from PIL import Image


class BenchHandler:
    def __init__(self):
        self.model = None
        self.kind = None
        self.initialized = False

    def initialize(self, context):
        model_dir = context.system_properties["model_dir"]
        with open(os.path.join(model_dir, "bench_workload.json")) as f:
            cfg = json.load(f)
        self.kind = cfg["workload"]
        self.topk = int(cfg.get("topk", 1))
        serialized = context.manifest["model"]["serializedFile"]
        self.model = torch.jit.load(os.path.join(model_dir, serialized), map_location="cpu")
        self.model.eval()
        if self.kind == "mnist":
            self.mean, self.std = 0.1307, 0.3081
        elif self.kind == "resnet":
            self.mean = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
            self.std = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)
        self.initialized = True

    def _decode(self, row):
        value = row.get("data")
        if value is None:
            value = row.get("body")
        if self.kind == "tiny":
            if isinstance(value, (bytes, bytearray)):
                value = json.loads(value)
            return torch.tensor(value, dtype=torch.float32)
        image = Image.open(io.BytesIO(value))
        if self.kind == "mnist":
            arr = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
            arr = (arr - self.mean) / self.std
            return torch.from_numpy(arr[None])
        arr = np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
        arr = (arr - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(arr))

    def handle(self, data, context):
        if not data:
            return []
        batch = torch.stack([self._decode(row) for row in data])
        with torch.inference_mode():
            out = self.model(batch)
        if self.kind == "mnist":
            probs = out.exp()  # the model ends in log_softmax
        else:
            probs = torch.softmax(out, dim=1)
        if self.topk == 1:
            score, idx = probs.max(dim=1)
            return [{"class": int(i), "score": round(float(s), 6)}
                    for i, s in zip(idx.tolist(), score.tolist())]
        score, idx = probs.topk(self.topk, dim=1)
        return [{"classes": i, "scores": [round(x, 6) for x in s]}
                for i, s in zip(idx.tolist(), score.tolist())]
'''


# -- models ------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = nn.Identity()
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.down(x))


class SmallResNet(nn.Module):
    """ResNet-18 layout (2 basic blocks per stage) with widths 32, 64, 128, 256 and a
    CIFAR-style 3x3 stem, for 3x64x64 inputs and 1000 classes."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256), classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        blocks: list[nn.Module] = []
        cin = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks += [BasicBlock(cin, w, stride), BasicBlock(w, w, 1)]
            cin = w
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        x = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def build_model(workload: str) -> nn.Module:
    torch.manual_seed(0)
    if workload == "tiny":
        model: nn.Module = nn.Linear(10, 10)
    elif workload == "mnist":
        model = MnistNet()  # the same CNN the README demo and notebooks train
    elif workload == "resnet":
        model = SmallResNet()
    else:
        raise ValueError(f"unknown workload {workload!r}")
    return model.eval()


def example_input(workload: str) -> torch.Tensor:
    shape = {"tiny": (1, 10), "mnist": (1, 1, 28, 28), "resnet": (1, 3, 64, 64)}[workload]
    return torch.zeros(shape)


# -- payloads ----------------------------------------------------------------------------------
def make_payload(workload: str) -> tuple[bytes, str]:
    """The request body and its Content-Type (deterministic)."""
    rng = np.random.default_rng(0)
    if workload == "tiny":
        values = [round(float(v), 4) for v in rng.standard_normal(10)]
        return json.dumps(values).encode(), "application/json"
    if workload == "mnist":
        img = Image.new("L", (28, 28), 0)
        draw = ImageDraw.Draw(img)
        draw.line([(7, 6), (21, 6), (12, 23)], fill=255, width=3)  # a hand-drawn-ish 7
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue(), "image/png"
    if workload == "resnet":
        y, x = np.mgrid[0:64, 0:64]
        base = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.float32)
        noise = rng.normal(0, 12, size=base.shape)
        arr = np.clip(base + noise, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr, "RGB").save(buf, format="PNG")
        return buf.getvalue(), "image/png"
    raise ValueError(f"unknown workload {workload!r}")


def make_v2_payload(workload: str) -> tuple[bytes, str]:
    """The same request as a KServe v2 `/infer` body: tiny's values as one FP32 tensor, an
    image as one BYTES element (base64, which the engine decodes to the bytes wrk would
    send to `/predictions`), so the handler gets what `make_payload` gives it."""
    body, _ = make_payload(workload)
    if workload == "tiny":
        values = json.loads(body)
        tensor = {"name": "input-0", "shape": [len(values)], "datatype": "FP32", "data": values}
    else:
        data = [base64.b64encode(body).decode()]
        tensor = {"name": "input-0", "shape": [1], "datatype": "BYTES", "data": data}
    return json.dumps({"inputs": [tensor]}).encode(), "application/json"


# -- archives ----------------------------------------------------------------------------------
def workload_config(workload: str) -> dict[str, object]:
    return {"workload": workload, "topk": 5 if workload == "resnet" else 1}


def build_archive(workload: str, store: Path, name: str | None = None) -> Path:
    """Write `<store>/<name>.mar` in torch-model-archiver 0.12's layout; return its path."""
    name = name or workload
    store.mkdir(parents=True, exist_ok=True)
    model = build_model(workload)
    scripted = torch.jit.trace(model, example_input(workload))
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    manifest = {
        "createdOn": time.strftime("%d/%m/%Y %H:%M:%S"),
        "runtime": "python",
        "model": {
            "modelName": name,
            "serializedFile": "model.pt",
            "handler": HANDLER_FILE,
            "modelVersion": "1.0",
        },
        "archiverVersion": "0.12.0",
    }
    path = store / f"{name}.mar"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest, indent=2))
        zf.writestr("model.pt", buf.getvalue())
        zf.writestr(HANDLER_FILE, HANDLER_SOURCE)
        zf.writestr(CONFIG_FILE, json.dumps(workload_config(workload)))
    return path


# -- the handler in this process (for the in-process limit) -------------------------------------
class _Context:
    """Just what the handler reads: model_dir and the manifest."""

    def __init__(self, model_dir: str, manifest: dict[str, object]) -> None:
        self.system_properties = {"model_dir": model_dir, "gpu_id": None, "batch_size": 32}
        self.manifest = manifest


@dataclass
class LocalPipeline:
    handler: object
    context: _Context

    def run(self, rows: list[dict[str, object]]) -> list[bytes]:
        """Handler + JSON serialisation of each output: what a worker does per batch."""
        outputs = self.handler.handle(rows, self.context)  # type: ignore[attr-defined]
        return [json.dumps(o).encode() for o in outputs]


def load_local(archive: Path, workdir: Path) -> LocalPipeline:
    """Unpack an archive and load its handler in this process."""
    target = workdir / archive.stem
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(target)
    manifest = json.loads((target / "MAR-INF" / "MANIFEST.json").read_text())
    module = _import_file(f"bench_handler_{archive.stem}", target / HANDLER_FILE)
    handler = module.BenchHandler()
    ctx = _Context(str(target), manifest)
    handler.initialize(ctx)
    return LocalPipeline(handler, ctx)


def _import_file(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def request_rows(workload: str, n: int, body: bytes | None = None) -> list[dict[str, object]]:
    """`n` requests as a server hands them to the handler (raw body bytes; JSON decoded
    per request inside the timed region by the handler, as the cheapest server does)."""
    if body is None:
        body, _ = make_payload(workload)
    return [{"body": bytearray(body)} for _ in range(n)]
