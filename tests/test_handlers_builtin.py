"""Built-in handlers on small real models: tensor, image_classifier, image_segmenter,
object_detector, text_classifier (each served through load_service)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from _handler_helpers import (
    digits_dataset,
    make_model_dir,
    png_bytes,
    request,
    train_digits_classifier,
)
from PIL import Image

from jupyter_torchserve.handlers.service import HandlerError, RequestInput, load_service

FP32_3 = {
    "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [{"name": "output-0", "datatype": "FP32", "shape": [-1, 2]}],
}


def _json(outputs):
    return [json.loads(o.body) for o in outputs]


@pytest.fixture(scope="module")
def linear():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2).eval()


@pytest.mark.parametrize("copy_builtin", [False, True], ids=["by-name", "copied-into-archive"])
def test_tensor_batches_requests_of_different_sizes_and_splits_back(tmp_path, linear, copy_builtin):
    svc = load_service(
        str(make_model_dir(tmp_path, linear, schema=FP32_3, copy_builtin=copy_builtin)),
        batch_size=3,
    )
    inputs = [torch.randn(1, 3), torch.randn(3, 3), torch.randn(2, 3)]
    outputs = _json(
        svc.predict([request(x.tolist(), request_id=str(i)) for i, x in enumerate(inputs)])
    )
    for x, out in zip(inputs, outputs, strict=True):
        assert np.allclose(out, linear(x).detach().numpy(), atol=1e-6)
        assert len(out) == len(x)


def test_tensor_accepts_every_body_format(tmp_path, linear):
    svc = load_service(str(make_model_dir(tmp_path, linear, schema=FP32_3)))
    x = torch.randn(2, 3)
    expected = linear(x).detach().numpy()
    npy = io.BytesIO()
    np.save(npy, x.numpy())
    saved = io.BytesIO()
    torch.save(x, saved)
    v2 = {
        "inputs": [
            {"name": "input-0", "shape": [2, 3], "datatype": "FP32", "data": x.flatten().tolist()}
        ]
    }
    requests = [
        request(x.tolist()),
        request({"data": x.tolist()}),
        request({"inputs": x.tolist()}),
        request(v2),
        request(npy.getvalue(), "application/x-npy"),
        request(npy.getvalue(), "application/octet-stream"),  # found by the NPY magic
        request(saved.getvalue(), "application/octet-stream"),
        request(json.dumps(x.tolist()).encode(), "application/octet-stream"),  # curl -T x.json
    ]
    for out in _json(svc.predict(requests)):
        assert np.allclose(out, expected, atol=1e-6)


def test_tensor_single_sample_gets_and_loses_the_batch_dim(tmp_path, linear):
    svc = load_service(str(make_model_dir(tmp_path, linear, schema=FP32_3)))
    out = _json(svc.predict([request([1.0, 2.0, 3.0]), request([[1.0, 2.0, 3.0]])]))
    assert np.asarray(out[0]).shape == (2,) and np.asarray(out[1]).shape == (1, 2)
    assert np.allclose(out[0], out[1][0])


def test_tensor_npy_response_when_asked(tmp_path, linear):
    svc = load_service(str(make_model_dir(tmp_path, linear, schema=FP32_3)))
    req = request([[1.0, 2.0, 3.0]], headers={"accept": "application/x-npy"})
    out = svc.predict([req])[0]
    assert out.content_type == "application/x-npy"
    assert np.load(io.BytesIO(out.body)).shape == (1, 2)


def test_tensor_dtype_from_schema(tmp_path):
    class Embed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 2)

        def forward(self, ids):
            return self.emb(ids).sum(1)

    model = Embed().eval()
    schema = {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [-1, 4]}]}
    svc = load_service(str(make_model_dir(tmp_path, model, schema=schema)))
    ids = [[1, 2, 3, 4], [5, 6, 7, 8]]
    out = _json(svc.predict([request(ids)]))[0]
    assert np.allclose(out, model(torch.tensor(ids)).detach().numpy())


def test_tensor_multi_input_keyed_by_name_and_tuple_output(tmp_path):
    class Two(torch.nn.Module):
        def forward(self, a, b):
            return a + b, a * b

    schema = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "b", "datatype": "FP32", "shape": [-1, 2]},
        ]
    }
    svc = load_service(str(make_model_dir(tmp_path, Two(), schema=schema)))
    out = _json(
        svc.predict(
            [
                request({"a": [[1, 2]], "b": [[3, 4]]}),
                request({"b": [[1, 1], [2, 2]], "a": [[5, 6], [7, 8]]}),
            ]
        )
    )
    assert out[0] == [[[4.0, 6.0]], [[3.0, 8.0]]]
    assert out[1] == [[[6.0, 7.0], [9.0, 10.0]], [[5.0, 6.0], [14.0, 16.0]]]
    with pytest.raises(HandlerError, match="needs the keys a, b"):
        svc.predict([request({"a": [[1, 2]]})])


def test_tensor_bad_body_is_the_requests_fault(tmp_path, linear):
    # a body the handler cannot read, or a shape the model refuses, is a 400 that says why;
    # a 503 would tell the caller that the model is broken and to try again
    svc = load_service(str(make_model_dir(tmp_path, linear, schema=FP32_3)))
    with pytest.raises(HandlerError, match="neither JSON, .npy nor torch.save") as e:
        svc.predict([request(b"\x01\x02garbage", "application/octet-stream")])
    assert e.value.status == 400
    # wrong width: the model refuses it, and the error says what was sent and what it takes
    want = r"input 'input-0' has shape \[1, 2\], but the model was archived with an example "
    want += r"of shape \[N, 3\] .*the model raised RuntimeError: mat1 and mat2 shapes"
    with pytest.raises(HandlerError, match=want) as e:
        svc.predict([request([[1.0, 2.0]])])
    assert e.value.status == 400
    with pytest.raises(HandlerError, match=r"has shape \[1, 2\]"):
        svc.predict([request([1.0, 2.0])])  # one sample: the batch dim is added first
    # rows of different lengths, or values that are not numbers, are the request's too
    with pytest.raises(HandlerError, match="ragged nested list; every row needs") as e:
        svc.predict([request([[1.0, 2.0, 3.0], [1.0, 2.0]])])
    assert e.value.status == 400
    with pytest.raises(HandlerError, match=r"must be numbers .*got \[\['a', 'b', 'c'\]\]") as e:
        svc.predict([request([["a", "b", "c"]])])
    assert e.value.status == 400
    v2 = [{"name": "input-0", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]
    with pytest.raises(HandlerError, match="input 'input-0': cannot reshape array") as e:
        svc.predict([request(v2)])  # TorchServe's kservev2 envelope hands the handler this
    assert e.value.status == 400
    # a batch the model takes is no mismatch: it answers
    assert np.asarray(_json(svc.predict([request([[1.0, 2.0, 3.0]] * 2)]))[0]).shape == (2, 2)


def test_tensor_explain_of_a_linear_model_is_input_times_weight(tmp_path, linear):
    # Integrated Gradients from a zero baseline, for a linear model: exactly x * w[top]
    svc = load_service(str(make_model_dir(tmp_path, linear, schema=FP32_3)))
    x = torch.tensor([[1.0, -2.0, 0.5]])
    out = _json(svc.predict([request(x.tolist(), headers={"explain": "True"})]))[0]
    top = int(linear(x).argmax())
    assert np.allclose(out, (x * linear.weight[top]).detach().numpy(), atol=1e-6)


def test_tensor_describe(tmp_path, linear):
    svc = load_service(str(make_model_dir(tmp_path, linear, schema=FP32_3)))
    described = svc.describe()
    assert described["schema"] == FP32_3 and described["handler"] == "TensorHandler"
    out = _json(svc.predict([request([[1, 2, 3]], headers={"describe": "True"})]))[0]
    assert out["format"] == "torchscript"


# -- image_classifier ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_model():
    return train_digits_classifier()


DIGIT_SCHEMA = {
    "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
    "outputs": [{"name": "output-0", "datatype": "FP32", "shape": [-1, 10]}],
}
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _digit_png(image: torch.Tensor, size: int = 8, mode: str = "L") -> bytes:
    pixels = (image[0].numpy() * 255).round().astype(np.uint8)
    pil = Image.fromarray(pixels, "L").resize((size, size), Image.NEAREST).convert(mode)
    return png_bytes(pil)


def test_image_classifier_recognises_digits_with_labels(tmp_path, digits_model):
    model_dir = make_model_dir(
        tmp_path,
        digits_model,
        handler="image_classifier",
        schema=DIGIT_SCHEMA,
        handler_config={"topk": 3},
        labels={str(i): w for i, w in enumerate(WORDS)},
    )
    svc = load_service(str(model_dir), batch_size=8)
    images, targets = digits_dataset()
    picks = list(range(0, 1700, 85))  # 20 digits
    outputs = _json(svc.predict([request(_digit_png(images[i]), "image/png") for i in picks]))
    correct = 0
    for i, out in zip(picks, outputs, strict=True):
        assert len(out) == 3 and set(out) <= set(WORDS)
        probs = list(out.values())
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
        correct += next(iter(out)) == WORDS[int(targets[i])]
        # the handler's answer is the in-memory model's answer on the same pixels
        expected = torch.softmax(digits_model(images[i : i + 1]), 1)[0].detach()
        top = int(expected.argmax())
        assert out[WORDS[top]] == pytest.approx(float(expected[top]), abs=0.02)
    assert correct >= 17


def test_image_classifier_converts_size_mode_and_base64(tmp_path, digits_model):
    svc = load_service(
        str(make_model_dir(tmp_path, digits_model, handler="image_classifier", schema=DIGIT_SCHEMA))
    )
    images, _ = digits_dataset()
    small = _digit_png(images[5])
    big_rgb = _digit_png(images[5], size=32, mode="RGB")
    b64 = base64.b64encode(small).decode()
    reqs = [
        request(small, "image/png"),
        request(big_rgb, "application/octet-stream"),
        request(b64, "text/plain"),
        request({"data": b64}),
        request(images[5].tolist()),  # a float nested list is taken as preprocessed
        RequestInput("f", {}, [("data", "image/png", small)]),  # multipart field "data"
    ]
    outs = _json(svc.predict(reqs))
    assert all(len(o) == 5 for o in outs)  # default top-5, class indices as labels
    assert len({next(iter(o)) for o in outs}) == 1
    with pytest.raises(HandlerError, match="not an image"):
        svc.predict([request(b"not an image", "image/png")])


def test_image_classifier_normalisation_and_explain(tmp_path):
    class Probe(torch.nn.Module):
        def forward(self, x):
            return torch.stack([x.mean(dim=(1, 2, 3)), -x.mean(dim=(1, 2, 3))], dim=1)

    schema = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 3, 4, 4]}]}
    cfg = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "apply_softmax": False, "topk": 2}
    svc = load_service(
        str(
            make_model_dir(
                tmp_path, Probe(), handler="image_classifier", schema=schema, handler_config=cfg
            )
        )
    )
    white = png_bytes(Image.new("RGB", (4, 4), (255, 255, 255)))
    out = _json(svc.predict([request(white, "image/png")]))[0]
    assert out == {"0": pytest.approx(2.0), "1": pytest.approx(-2.0)}  # (1 - 0.5) / 0.25
    explained = _json(svc.predict([request(white, "image/png", headers={"explain": "True"})]))[0]
    assert np.asarray(explained).shape == (3, 4, 4)
    assert np.allclose(explained, 2.0 / 48)  # x * d(mean)/dx = 2 * 1/48


# -- image_segmenter ----------------------------------------------------------------------------
def test_image_segmenter_returns_per_pixel_classes(tmp_path):
    torch.manual_seed(1)
    model = torch.nn.Conv2d(3, 4, 1).eval()
    schema = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 3, 6, 5]}]}
    svc = load_service(
        str(make_model_dir(tmp_path, model, handler="image_segmenter", schema=schema))
    )
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)
    out = _json(svc.predict([request(png_bytes(Image.fromarray(pixels, "RGB")), "image/png")] * 2))
    x = torch.from_numpy(pixels.astype(np.float32) / 255).permute(2, 0, 1)[None]
    expected = model(x).argmax(1)[0].tolist()
    assert out[0] == expected and out[1] == expected
    assert np.asarray(out[0]).shape == (6, 5)


# -- object_detector ----------------------------------------------------------------------------
class Detector(torch.nn.Module):
    """Two fixed boxes per image; scores from the image brightness."""

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        results: list[dict[str, torch.Tensor]] = []
        for image in images:
            level = image.mean()
            results.append(
                {
                    "boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 4.0]]),
                    "labels": torch.tensor([1, 2]),
                    "scores": torch.stack([level, 1.0 - level]),
                }
            )
        return results


def test_object_detector_thresholds_and_labels(tmp_path):
    schema = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 3, 4, 4]}]}
    model_dir = make_model_dir(
        tmp_path,
        Detector(),
        handler="object_detector",
        schema=schema,
        labels={"1": "cat", "2": "dog"},
    )
    svc = load_service(str(model_dir))
    bright = png_bytes(Image.new("RGB", (4, 4), (230, 230, 230)))
    dark = png_bytes(Image.new("RGB", (4, 4), (25, 25, 25)))
    out = _json(svc.predict([request(bright, "image/png"), request(dark, "image/png")]))
    assert out[0] == [{"cat": [0.0, 0.0, 2.0, 2.0], "score": pytest.approx(230 / 255, abs=1e-4)}]
    assert out[1] == [{"dog": [1.0, 1.0, 3.0, 4.0], "score": pytest.approx(1 - 25 / 255, abs=1e-4)}]


def test_object_detector_threshold_from_config_and_tuple_output(tmp_path):
    class TupleDetector(torch.nn.Module):
        def forward(self, images: torch.Tensor):
            n = images.shape[0]
            boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]).repeat(n, 1, 1)
            return boxes, torch.zeros(n, 1, dtype=torch.int64), torch.full((n, 1), 0.3)

    schema = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 1, 2, 2]}]}
    model_dir = make_model_dir(
        tmp_path,
        TupleDetector(),
        handler="object_detector",
        schema=schema,
        handler_config={"threshold": 0.25},
    )
    svc = load_service(str(model_dir))
    image = png_bytes(Image.new("L", (2, 2), 0))
    out = _json(svc.predict([request(image, "image/png")] * 2))
    assert out == [[{"0": [0.0, 0.0, 1.0, 1.0], "score": pytest.approx(0.3)}]] * 2


# -- text_classifier ----------------------------------------------------------------------------
class BagOfWords(torch.nn.Module):
    def __init__(self, vocab_size: int = 6, classes: int = 2):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab_size, 4, padding_idx=0)
        self.fc = torch.nn.Linear(4, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(ids).sum(1))


VOCAB = {"<pad>": 0, "<unk>": 1, "good": 2, "bad": 3, "movie": 4, "!": 5}


def test_text_classifier_with_vocab_json(tmp_path):
    torch.manual_seed(0)
    model = BagOfWords().eval()
    model_dir = make_model_dir(
        tmp_path,
        model,
        handler="text_classifier",
        labels={"0": "negative", "1": "positive"},
        files={"vocab.json": json.dumps(VOCAB)},
    )
    svc = load_service(str(model_dir))
    out = _json(
        svc.predict(
            [
                request(b"Good movie!", "application/octet-stream"),
                request("bad", "text/plain"),
                request({"text": "unknown words here"}),
            ]
        )
    )
    expected = torch.softmax(model(torch.tensor([[2, 4, 5]])), 1)[0].tolist()
    assert out[0] == {
        "negative": pytest.approx(expected[0]),
        "positive": pytest.approx(expected[1]),
    }
    expected_bad = torch.softmax(model(torch.tensor([[3]])), 1)[0].tolist()
    assert out[1]["positive"] == pytest.approx(expected_bad[1])
    expected_unk = torch.softmax(model(torch.tensor([[1, 1, 1]])), 1)[0].tolist()
    assert out[2]["negative"] == pytest.approx(expected_unk[0])


def test_text_classifier_offsets_mode_with_source_vocab_pt(tmp_path):
    class Bag(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bag = torch.nn.EmbeddingBag(6, 3, mode="mean")
            self.fc = torch.nn.Linear(3, 3)

        def forward(self, text: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
            return self.fc(self.bag(text, offsets))

    torch.manual_seed(0)
    model = Bag().eval()
    vocab_bytes = io.BytesIO()
    torch.save(VOCAB, vocab_bytes)
    model_dir = make_model_dir(
        tmp_path,
        model,
        handler="text_classifier",
        handler_config={"input_mode": "offsets", "topk": 2},
        files={"source_vocab.pt": vocab_bytes.getvalue()},
    )
    svc = load_service(str(model_dir))
    out = _json(svc.predict([request("good movie", "text/plain"), request("bad !", "text/plain")]))
    logits = model(torch.tensor([2, 4, 3, 5]), torch.tensor([0, 2]))
    expected = torch.softmax(logits, 1).detach()
    for row, probs in zip(out, expected, strict=True):
        assert len(row) == 2
        top = int(probs.argmax())
        assert row[str(top)] == pytest.approx(float(probs[top]))


def test_text_classifier_needs_a_vocabulary(tmp_path):
    model_dir = make_model_dir(tmp_path, BagOfWords(), handler="text_classifier")
    with pytest.raises(HandlerError, match="vocab.json or source_vocab.pt"):
        load_service(str(model_dir))


# -- devices -----------------------------------------------------------------------------------
def test_gpu_id_without_cuda_falls_back_to_cpu(tmp_path, linear, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    svc = load_service(str(make_model_dir(tmp_path, linear, schema=FP32_3)), gpu_id=0)
    assert svc.context.system_properties["gpu_id"] == 0
    assert svc.handler_instance.device == torch.device("cpu")
    assert _json(svc.predict([request([[1.0, 2.0, 3.0]])]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_id_places_the_model_on_that_gpu(tmp_path, linear):
    svc = load_service(str(make_model_dir(tmp_path, linear, schema=FP32_3)), gpu_id=0)
    handler = svc.handler_instance
    assert handler.device == torch.device("cuda:0")
    assert next(handler.model.parameters()).device.type == "cuda"
    x = torch.randn(2, 3)
    out = _json(svc.predict([request(x.tolist())]))[0]
    assert np.allclose(out, linear(x).detach().numpy(), atol=1e-4)
