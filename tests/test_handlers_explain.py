"""Issue 17: the built-in handlers explain with Captum, and their answers equal Captum's own.

Every expected value here is computed in the test process with Captum on the in-memory
model (``IntegratedGradients(model).attribute(x, target, n_steps=...)``), and compared with
what ``handlers.service.load_service`` answers for an unpacked archive: one written by
hand with the built-in files copied in, as our archiver does (fast), or a real archive of
every format written by ``jupyter_torchserve.archive`` (``preflight=False``, so no process
starts; but torch.export and source capture take seconds each, so those tests are ``slow``
like tests/test_handlers_archives.py, and the fast tier stays under a minute).
"""

from __future__ import annotations

import ast
import base64
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _explain_helpers import MEAN, STD, TinyCNN, model_input
from _handler_helpers import make_model_dir, png_bytes, request
from captum.attr import IntegratedGradients, LayerIntegratedGradients
from PIL import Image
from torch import nn

from jupyter_torchserve.archive import archive, extract
from jupyter_torchserve.handlers.service import (
    HandlerError,
    RequestInput,
    builtin_dir,
    load_service,
)

TOL = 1e-4


class BagOfWords(nn.Module):
    """A text classifier over an nn.Embedding: mean of the word vectors, then a linear layer."""

    def __init__(self, vocab: int = 12, dim: int = 6, classes: int = 3) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim, padding_idx=0)
        self.fc = nn.Linear(dim, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.embedding(ids)).mean(dim=1))


VOCAB = {
    "<pad>": 0,
    "<unk>": 1,
    "the": 2,
    "film": 3,
    "was": 4,
    "great": 5,
    "awful": 6,
    "plot": 7,
    "!": 8,
}


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    rng = np.random.default_rng(0)
    return [
        png_bytes(Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L"))
        for _ in range(3)
    ]


def captum_ig(model: nn.Module, x: torch.Tensor, target: int, **kwargs):
    attributions, delta = IntegratedGradients(model).attribute(
        x, target=target, return_convergence_delta=True, **kwargs
    )
    return attributions.detach(), float(delta)


IMAGE_SCHEMA = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]}


def image_service(tmp_path: Path, model: nn.Module, **explain_config):
    """``model`` as TorchScript with the image_classifier files copied in, loaded in-process."""
    config = {"mean": [MEAN], "std": [STD]}
    if explain_config:
        config["explain"] = explain_config
    model_dir = make_model_dir(
        tmp_path,
        model,
        handler="image_classifier",
        schema=IMAGE_SCHEMA,
        handler_config=config,
        copy_builtin=True,
    )
    return load_service(str(model_dir), batch_size=4)


def serve(tmp_path: Path, model: nn.Module, fmt: str, handler: str, example, **kwargs):
    """A real archive of ``model`` (our archiver, no pre-flight process), loaded in-process."""
    path = archive(
        model,
        name=f"x_{fmt}_{handler}",
        handler=handler,
        example_inputs=example,
        export_path=str(tmp_path),
        format=fmt,
        preflight=False,
        force=True,
        **kwargs,
    )
    model_dir, _ = extract(str(path), str(tmp_path / "cache"))
    return load_service(model_dir, batch_size=4)


def explain(svc, *requests: RequestInput):
    """Explain a batch; each answer as (parsed body, parsed x-explanation header)."""
    for req in requests:
        req.headers["explain"] = "True"
    return [
        (json.loads(r.body), json.loads(r.headers["x-explanation"]))
        for r in svc.predict(list(requests))
    ]


def image_request(png: bytes, target: object = None) -> RequestInput:
    params = [("data", "image/png", png)]
    if target is not None:  # a form field, as `curl -F target=3` sends it
        params.append(("target", "text/plain", str(target).encode()))
    return RequestInput("r", {}, params)


# -- image_classifier -------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["export", "torchscript", "eager"])
def test_image_explanation_is_captum_ig_toward_the_predicted_class(tmp_path, cnn, images, fmt):
    svc = serve(
        tmp_path,
        cnn,
        fmt,
        "image_classifier",
        model_input(images[0]),
        handler_config={"mean": [MEAN], "std": [STD]},
    )
    x = model_input(images[0])
    predicted = int(cnn(x).argmax())
    want, want_delta = captum_ig(cnn, x, predicted, n_steps=15)

    ((body, info),) = explain(svc, image_request(images[0]))
    got = torch.tensor(body)
    assert got.shape == (1, 8, 8)  # TorchServe's per-request [C][H][W]
    assert torch.allclose(got, want[0], atol=TOL), (got - want[0]).abs().max()
    assert info["target"] == info["prediction"] == predicted
    assert info["method"] == "IntegratedGradients" and info["n_steps"] == 15
    assert info["baseline"] == 0
    assert info["delta"] == pytest.approx(want_delta, abs=TOL)
    probs = torch.softmax(cnn(x), dim=1)[0]
    assert info["probability"] == pytest.approx(float(probs[predicted].detach()), abs=1e-5)
    assert [c for c, _, _ in info["topk"]] == probs.topk(5).indices.tolist()
    assert info["ms"] > 0


def test_a_batch_is_explained_row_by_row_against_each_rows_own_target(tmp_path, cnn, images):
    svc = image_service(tmp_path, cnn)
    xs = [model_input(png) for png in images]
    predicted = [int(cnn(x).argmax()) for x in xs]
    named = (predicted[1] + 1) % 5  # a class the model does not predict for that image
    answers = explain(
        svc, image_request(images[0]), image_request(images[1], named), image_request(images[2], 0)
    )
    for (body, info), x, target in zip(answers, xs, [predicted[0], named, 0], strict=True):
        want, want_delta = captum_ig(cnn, x, target, n_steps=15)
        assert info["target"] == target
        assert torch.allclose(torch.tensor(body), want[0], atol=TOL)
        assert info["delta"] == pytest.approx(want_delta, abs=TOL)
    assert answers[1][1]["prediction"] == predicted[1] != named


def test_a_batch_mixing_predictions_and_explanations_answers_each_its_own(tmp_path, cnn, images):
    """TorchServe's frontend batches both kinds together; each request gets what it asked."""
    svc = image_service(tmp_path, cnn)
    reqs = [image_request(png) for png in images]
    reqs[1].headers["explain"] = "True"
    first, second, third = svc.predict(reqs)
    for answer, png in ((first, images[0]), (third, images[2])):
        probs = torch.softmax(cnn(model_input(png)), dim=1)[0].detach()
        assert "x-explanation" not in answer.headers
        assert list(json.loads(answer.body).values()) == pytest.approx(
            probs.topk(5).values.tolist(), abs=1e-5
        )
    x = model_input(images[1])
    want, _ = captum_ig(cnn, x, int(cnn(x).argmax()), n_steps=15)
    assert torch.allclose(torch.tensor(json.loads(second.body)), want[0], atol=TOL)
    assert json.loads(second.headers["x-explanation"])["target"] == int(cnn(x).argmax())


def test_kserve_v1_instances_name_their_target_like_torchserve(tmp_path, cnn, images):
    """``{"instances": [{"data": "<b64 png>", "target": 3}]}``: each key is one parameter."""
    svc = image_service(tmp_path, cnn)
    instance = {"data": base64.b64encode(images[1]).decode(), "target": 3}
    params = [(k, "application/json", json.dumps(v).encode()) for k, v in instance.items()]
    ((body, info),) = explain(svc, RequestInput("r", {}, params))
    want, _ = captum_ig(cnn, model_input(images[1]), 3, n_steps=15)
    assert info["target"] == 3
    assert torch.allclose(torch.tensor(body), want[0], atol=TOL)


def test_n_steps_baseline_and_internal_batch_size_come_from_handler_config(tmp_path, cnn, images):
    svc = image_service(tmp_path, cnn, n_steps=7, baseline="black", internal_batch_size=3)
    x = model_input(images[2])
    black = torch.full_like(x, (0.0 - MEAN) / STD)
    target = int(cnn(x).argmax())
    want, want_delta = captum_ig(cnn, x, target, n_steps=7, baselines=black)
    ((body, info),) = explain(svc, image_request(images[2]))
    assert info["n_steps"] == 7 and info["baseline"] == "black"
    assert torch.allclose(torch.tensor(body), want[0], atol=TOL)
    assert info["delta"] == pytest.approx(want_delta, abs=TOL)


@pytest.mark.parametrize(
    "target, message",
    [("12", "target 12 is out of range: the model has 5 outputs"), ("cat", "class index")],
)
def test_a_bad_target_is_a_400_naming_it(tmp_path, cnn, images, target, message):
    svc = image_service(tmp_path, cnn)
    with pytest.raises(HandlerError, match=message) as caught:
        explain(svc, image_request(images[0], target))
    assert caught.value.status == 400
    (ok,) = svc.predict([image_request(images[0])])  # and the model still predicts
    assert ok.status == 200 and len(json.loads(ok.body)) == 5


def test_bad_explain_config_fails_the_load(tmp_path, cnn):
    cases = [
        ({"n_steps": 0}, "n_steps"),
        ({"steps": 5}, "unknown keys"),
        ({"baseline": "grey"}, "baseline"),
        ({"method": "simpson"}, "method"),
        (True, "must be an object"),
    ]
    for i, (config, message) in enumerate(cases):
        model_dir = make_model_dir(
            tmp_path,
            cnn,
            handler="image_classifier",
            schema=IMAGE_SCHEMA,
            handler_config={"explain": config},
            name=f"bad{i}",
            copy_builtin=True,
        )
        with pytest.raises(HandlerError, match=message):
            load_service(str(model_dir))


def test_without_captum_an_explanation_is_a_clear_501_and_predictions_go_on(
    tmp_path, cnn, images, monkeypatch
):
    svc = image_service(tmp_path, cnn)
    for name in [m for m in sys.modules if m == "captum" or m.startswith("captum.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "captum", None)  # `import captum` now raises ImportError
    with pytest.raises(HandlerError, match="pip install captum") as caught:
        explain(svc, image_request(images[0]))
    assert caught.value.status == 501
    (ok,) = svc.predict([image_request(images[0])])
    assert ok.status == 200


def test_a_segmenter_is_explained_toward_one_class_summed_over_the_pixels(tmp_path, images):
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 4, 1)).eval()
    model_dir = make_model_dir(
        tmp_path,
        model,
        handler="image_segmenter",
        schema=IMAGE_SCHEMA,
        copy_builtin=True,
        handler_config={"mean": [MEAN], "std": [STD]},
    )
    svc = load_service(str(model_dir))
    x = model_input(images[0])

    def per_class(inputs: torch.Tensor) -> torch.Tensor:
        return model(inputs).sum(dim=(2, 3))

    (default, default_info), (named, named_info) = explain(
        svc, image_request(images[0]), image_request(images[0], 2)
    )
    biggest = int(per_class(x).argmax())
    for body, info, target in ((default, default_info, biggest), (named, named_info, 2)):
        want, delta = captum_ig(per_class, x, target, n_steps=15)
        assert info["target"] == target
        assert torch.allclose(torch.tensor(body), want[0], atol=TOL)
        assert info["delta"] == pytest.approx(delta, abs=TOL)


def test_an_object_detector_says_it_has_no_built_in_explanation(tmp_path, images):
    class Boxes(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            n = x.shape[0]
            return (
                torch.zeros(n, 1, 4),
                torch.zeros(n, 1, dtype=torch.int64),
                x.mean((1, 2, 3))[:, None],
            )

    model_dir = make_model_dir(
        tmp_path, Boxes(), handler="object_detector", schema=IMAGE_SCHEMA, copy_builtin=True
    )
    svc = load_service(str(model_dir))
    with pytest.raises(HandlerError, match="object detection has no built-in explanation") as e:
        explain(svc, image_request(images[0]))
    assert e.value.status == 501


# -- tensor -----------------------------------------------------------------------------------
class Mixer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def test_tensor_handler_explains_each_row_toward_its_target(tmp_path):
    torch.manual_seed(1)
    model = Mixer().eval()
    xs = torch.randn(3, 4)
    schema = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]}
    svc = load_service(str(make_model_dir(tmp_path, model, schema=schema, copy_builtin=True)))
    predicted = model(xs).argmax(1).tolist()
    # one sample (no batch dimension), a batch of two with a target each, a batch of one
    answers = explain(
        svc,
        request(xs[0].tolist()),
        request({"data": xs[1:].tolist(), "target": [2, 0]}),
        request(xs[:1].tolist()),
    )
    (one, one_info), (two, two_info), (batch1, _) = answers
    want, delta = captum_ig(model, xs[:1], predicted[0], n_steps=15)
    assert np.asarray(one).shape == (4,) and one_info["target"] == predicted[0]
    assert torch.allclose(torch.tensor(one), want[0], atol=TOL)
    assert one_info["delta"] == pytest.approx(delta, abs=TOL)
    assert np.asarray(batch1).shape == (1, 4)
    want2 = IntegratedGradients(model).attribute(xs[1:], target=[2, 0], n_steps=15)
    assert two_info["target"] == [2, 0] and len(two_info["delta"]) == 2
    assert two_info["prediction"] == predicted[1:]
    assert torch.allclose(torch.tensor(two), want2.detach(), atol=TOL)


class Scaled(nn.Module):
    """Two inputs: features (explained) and an integer scale per row (held fixed)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(x)) * (1 + scale.float()).unsqueeze(1)


def test_a_multi_input_model_is_explained_over_its_float_inputs(tmp_path):
    torch.manual_seed(5)
    model = Scaled().eval()
    x, scale = torch.randn(2, 4), torch.tensor([1, 3])
    schema = {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "scale", "datatype": "INT64", "shape": [-1]},
        ]
    }
    model_dir = make_model_dir(tmp_path, model, schema=schema, copy_builtin=True)
    svc = load_service(str(model_dir))
    ((body, info),) = explain(svc, request({"features": x.tolist(), "scale": scale.tolist()}))
    targets = model(x, scale).argmax(1).tolist()
    want = IntegratedGradients(model).attribute(
        x, additional_forward_args=(scale,), target=targets, n_steps=15
    )
    assert info["target"] == targets
    assert [sorted(row) for row in body] == [["features"], ["features"]]
    assert torch.allclose(torch.tensor([row["features"] for row in body]), want, atol=TOL)


def test_integer_inputs_cannot_be_integrated_and_say_so(tmp_path):
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 2)).eval()
    schema = {"inputs": [{"name": "input-0", "datatype": "INT64", "shape": [-1, 2]}]}
    svc = load_service(str(make_model_dir(tmp_path, model, schema=schema, copy_builtin=True)))
    with pytest.raises(HandlerError, match="floating-point model input") as caught:
        explain(svc, request([[1, 2]]))
    assert caught.value.status == 501


# -- text_classifier --------------------------------------------------------------------------
LENGTH = 12  # the example's length: the schema then fixes every text at 12 ids


def text_service(tmp_path: Path, model: nn.Module, fmt: str = "eager", example=True):
    return serve(
        tmp_path,
        model,
        fmt,
        "text_classifier",
        torch.tensor([[2, 3, 4, 5] * 3]) if example else None,
        extra_files={"vocab.json": json.dumps(VOCAB)},
    )


@pytest.mark.slow
def test_text_explanation_is_layer_ig_over_the_embedding(tmp_path):
    torch.manual_seed(2)
    model = BagOfWords().eval()
    svc = text_service(tmp_path, model)
    text = "The film was great, the plot awful!"
    words = ["the", "film", "was", "great", ",", "the", "plot", "awful", "!"]
    words += ["<pad>"] * (LENGTH - len(words))
    ids = torch.tensor([[VOCAB.get(w, 1) for w in words]])
    predicted = int(model(ids).argmax())

    ((body, info),) = explain(svc, request(text, "text/plain"))
    lig = LayerIntegratedGradients(model, model.embedding)
    attributions, delta = lig.attribute(
        ids,
        baselines=torch.zeros_like(ids),
        target=predicted,
        n_steps=15,
        return_convergence_delta=True,
    )
    summed = attributions.sum(dim=-1)[0]
    want = summed / torch.linalg.vector_norm(summed)
    assert body["words"] == words  # as written ("," is <unk> to the model), then padding
    assert torch.allclose(torch.tensor(body["importances"]), want, atol=TOL)
    assert body["delta"] == pytest.approx(float(delta), abs=TOL)
    assert info["target"] == predicted and info["method"] == "LayerIntegratedGradients"
    assert info["delta"] == pytest.approx(body["delta"])


@pytest.mark.slow
def test_text_explained_in_a_batch_is_the_same_as_alone(tmp_path):
    """Padding to the batch's longest text must not change a text's importances."""
    torch.manual_seed(3)
    svc = text_service(tmp_path, BagOfWords().eval(), example=False)  # no fixed length
    short, long = request("great film", "text/plain"), request("the plot was awful !", "text/plain")
    ((alone, _),) = explain(svc, request("great film", "text/plain"))
    (together, _), (other, _) = explain(svc, short, long)
    assert together == alone
    assert len(other["words"]) == len(other["importances"]) == 5


@pytest.mark.slow
def test_a_torchscript_text_model_says_to_archive_it_eager(tmp_path):
    torch.manual_seed(4)
    svc = text_service(tmp_path, BagOfWords().eval(), fmt="torchscript")
    with pytest.raises(HandlerError, match="format='eager'") as caught:
        explain(svc, request("great film", "text/plain"))
    assert caught.value.status == 501


# -- the compat BaseHandler / VisionHandler --------------------------------------------------
VISION_SUBCLASS = """
import numpy as np
import torch
from ts.torch_handler.vision_handler import VisionHandler


class Digits(VisionHandler):
    @staticmethod
    def image_processing(image):
        pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        return ((torch.from_numpy(pixels) - 0.2) / 0.3)[None]

    def postprocess(self, data):
        return data.argmax(1).tolist()
"""


def test_a_torchserve_vision_handler_explains_with_captum_as_in_torchserve(tmp_path, cnn, images):
    """TorchServe's rule, kept: the batch against the first request's target (default 0)."""
    model_dir = make_model_dir(
        tmp_path, cnn, handler="handler.py", files={"handler.py": VISION_SUBCLASS}
    )
    svc = load_service(str(model_dir), batch_size=2)
    assert svc.handler_instance.ig is not None  # TorchServe handlers call self.ig directly
    xs = torch.cat([model_input(png) for png in images[:2]])
    for target, reqs in [
        (0, [image_request(images[0]), image_request(images[1])]),
        (3, [image_request(images[0], 3), image_request(images[1], 1)]),
    ]:
        for req in reqs:
            req.headers["explain"] = "True"
        bodies = [json.loads(r.body) for r in svc.predict(reqs)]
        want = IntegratedGradients(cnn).attribute(xs, target=target, n_steps=15).detach()
        assert torch.allclose(torch.tensor(bodies), want, atol=TOL)


# -- what the built-in files may import --------------------------------------------------------
def test_builtin_handlers_import_captum_only_when_asked():
    """Archives carry these files: at module level only stdlib, torch, numpy, PIL, siblings."""
    allowed = set(sys.stdlib_module_names) | {"torch", "numpy", "PIL", "__future__"}
    for path in sorted(Path(builtin_dir()).glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            extra = {r for r in roots if r not in allowed and not r.startswith("jts_")}
            assert not extra, f"{path.name}:{node.lineno} imports {extra} at module level"
    source = (Path(builtin_dir()) / "jts_base.py").read_text()
    assert "import captum.attr" in source  # ... and inside captum_attr() only
