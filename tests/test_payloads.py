"""The example a deploy sends and the KServe bodies, checked in-process (no engine, no kernel).

The image cases load the archive's own handler in this process, as a worker does, and check
that the tensor the parity check gives the in-kernel model is the very tensor that handler
makes of the request, with resize, crop, ``image_size``, colour mode and alpha in play.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from _notebook_helpers import Pooled, rgba_png

from jupyter_torchserve import payloads
from jupyter_torchserve.archive import archive
from jupyter_torchserve.archive.reader import extract
from jupyter_torchserve.handlers.service import RequestInput, load_service

pytestmark = pytest.mark.timeout(300)

MEAN, STD = [0.5], [0.25]


def served_handler(tmp_path: Path, model: Any, example: payloads.Example, cfg: dict) -> Any:
    """The archive's handler, loaded in this process from the unpacked archive."""
    path = archive(
        model,
        "pooled",
        handler="image_classifier",
        example_inputs=example.tensor,
        handler_config=cfg,
        export_path=str(tmp_path),
        format="torchscript",  # a tenth of export's time: this is the fast tier
        preflight=False,
    )
    model_dir, _ = extract(str(path), str(tmp_path / "cache"))
    return load_service(model_dir)


CASES = {
    # an RGBA PNG of another size for a grayscale model: alpha, resize, crop, image_size
    "rgba png, resize + crop + image_size": (
        1,
        lambda: rgba_png(),
        {"resize": 32, "center_crop": 30, "image_size": 28, "mean": MEAN, "std": STD},
        (1, 1, 28, 28),
    ),
    # a colour tensor example, resized by image_size on the way through its PNG
    "rgb tensor, image_size": (
        3,
        lambda: torch.rand(1, 3, 20, 24),
        {"image_size": [16, 18], "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.2, 0.2]},
        (1, 3, 16, 18),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_image_example_is_what_the_served_handler_makes_of_it(tmp_path: Path, case: str) -> None:
    channels, make, cfg, shape = CASES[case]
    torch.manual_seed(0)
    model = Pooled(channels).eval()
    example = payloads.split_example(make(), "image_classifier", cfg)
    assert tuple(example.tensor.shape) == shape
    svc = served_handler(tmp_path, model, example, cfg)

    served_input = svc.handler_instance.preprocess([{"body": example.request}])
    assert torch.equal(served_input, example.tensor)

    # so the served answer is the in-kernel model's on that tensor, label by label
    [answer] = svc.predict([RequestInput("r", {}, [("body", "image/png", example.request)])])
    with torch.no_grad():
        probs = torch.softmax(model(example.tensor)[0], 0)
    for label, p in json.loads(answer.body).items():
        assert p == pytest.approx(float(probs[int(label)]), abs=1e-6)


def test_alpha_counts_in_the_kernel_input() -> None:
    """Transparent pixels are white to the handler: dropping alpha would be another input."""
    from PIL import Image

    png = rgba_png()
    opaque = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(opaque, format="PNG")
    cfg = {"image_size": 28}
    with_alpha = payloads.split_example(png, "image_classifier", cfg).tensor
    without = payloads.split_example(opaque.getvalue(), "image_classifier", cfg).tensor
    assert with_alpha.shape == without.shape == (1, 1, 28, 28)
    assert float((with_alpha - without).abs().max()) > 0.2


def test_tensor_example_for_the_tensor_handler_is_sent_as_json() -> None:
    x = torch.arange(6.0).reshape(2, 3)
    example = payloads.split_example(x, None, None)
    assert example.tensor is x and example.request is None
    body, ctype = payloads.request_body(example)
    assert ctype == "application/json" and json.loads(body) == x.tolist()


def test_kserve_bodies() -> None:
    png = rgba_png(4, 4)
    b64 = base64.b64encode(png).decode()
    assert payloads.v1_instances(png) == [{"b64": b64}]
    assert payloads.v2_inputs(png, "img") == [
        {"name": "img", "shape": [1], "datatype": "BYTES", "data": [b64]}
    ]
    t = torch.tensor([[1, 2, 3]], dtype=torch.int64)
    assert payloads.v1_instances(t) == [[1, 2, 3]]
    assert payloads.v2_inputs(t) == [
        {"name": "input-0", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]}
    ]
    ready = [{"name": "x", "shape": [1], "datatype": "FP32", "data": [0.5]}]
    assert payloads.v2_inputs(ready) is ready
    assert payloads.v2_inputs({"inputs": ready}) is ready
    assert payloads.v1_instances({"a": 1}) == [{"a": 1}]


def test_example_files_are_ready_to_send(tmp_path: Path) -> None:
    png = rgba_png(4, 4)
    files = payloads.write_example_files(tmp_path, "m-1.0", payloads.Example(None, png), "img")
    assert Path(files["raw"]).read_bytes() == png
    assert json.loads(Path(files["v1"]).read_text()) == {"instances": payloads.v1_instances(png)}
    v2 = json.loads(Path(files["v2"]).read_text())
    assert v2["inputs"][0]["name"] == "img" and v2["inputs"][0]["datatype"] == "BYTES"

    x = torch.ones(1, 2)
    files = payloads.write_example_files(tmp_path, "t-1.0", payloads.Example(x, None))
    assert json.loads(Path(files["raw"]).read_text()) == [[1.0, 1.0]]
    assert json.loads(Path(files["v2"]).read_text())["inputs"][0]["shape"] == [1, 2]

    files = payloads.write_example_files(tmp_path, "s-1.0", payloads.Example(None, "hello"))
    assert Path(files["raw"]).read_text() == "hello" and "v2" not in files
    assert payloads.write_example_files(tmp_path / "missing", "x", payloads.Example(x, None)) == {}


def test_several_inputs_give_named_bodies(tmp_path: Path) -> None:
    """A tuple example is named by position, a dict by its keys; both as the archive names them."""
    a, b = torch.ones(1, 4), torch.arange(2.0).reshape(1, 2)
    positional = payloads.split_example((a, b), None, None)
    assert isinstance(positional.tensor, tuple) and positional.request is None
    keywords = payloads.split_example({"b": b, "a": a}, None, None)
    assert list(keywords.tensor) == ["b", "a"] and keywords.request is None

    body, ctype = payloads.request_body(positional)
    assert ctype == "application/json"
    assert json.loads(body) == {"input-0": a.tolist(), "input-1": b.tolist()}
    assert json.loads(payloads.request_body(keywords)[0]) == {"b": b.tolist(), "a": a.tolist()}

    assert payloads.v2_inputs(keywords.tensor) == [
        {"name": "b", "shape": [1, 2], "datatype": "FP32", "data": [0.0, 1.0]},
        {"name": "a", "shape": [1, 4], "datatype": "FP32", "data": [1.0] * 4},
    ]
    assert [i["name"] for i in payloads.v2_inputs(positional.tensor)] == ["input-0", "input-1"]
    # a served schema's names go to a tuple by position (Deployment.predict((a, b)))
    by_schema = payloads.multi_input_json((a, b), ["x", "y"])
    assert json.loads(by_schema) == {"x": a.tolist(), "y": b.tolist()}
    assert payloads.several_tensors((a, b)) and payloads.several_tensors({"a": a})
    assert not payloads.several_tensors({"data": [1.0]}) and not payloads.several_tensors(())

    files = payloads.write_example_files(tmp_path, "two-1.0", positional)
    assert json.loads(Path(files["raw"]).read_text()) == json.loads(body)
    # KServe v1: one instance per sample, keyed by input name
    v1 = json.loads(Path(files["v1"]).read_text())
    assert v1 == {"instances": [{"input-0": a[0].tolist(), "input-1": b[0].tolist()}]}
    sent = json.loads(Path(files["v2"]).read_text())["inputs"]
    assert [(i["name"], i["shape"]) for i in sent] == [("input-0", [1, 4]), ("input-1", [1, 2])]
