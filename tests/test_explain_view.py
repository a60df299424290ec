"""Issue 17: explanations drawn for people: input | signed heatmap | overlay, highlighted words.

The answers drawn are real: Captum's Integrated Gradients of a CNN on a digit, and
LayerIntegratedGradients of a text model, serialised as the handlers answer them. The PNGs
are decoded with Pillow and looked at: their size, and that each panel shows what it should.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients
from PIL import Image, ImageDraw
from torch import nn

from jupyter_torchserve.examples import mnist
from jupyter_torchserve.explain_view import (
    FeatureExplanation,
    ImageExplanation,
    TextExplanation,
    explanation,
)


@pytest.fixture(scope="module")
def digit() -> tuple[bytes, list, dict]:
    """A digit PNG, the IG answer for it (TorchServe's [C][H][W] list) and its header."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 5, stride=2), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 12 * 12, 10)
    ).eval()
    image = Image.new("L", (28, 28))  # a hand-drawn 7 (MNIST's layout: white on black)
    ImageDraw.Draw(image).line([(7, 6), (21, 6), (12, 23)], fill=255, width=3)
    image = np.asarray(image)
    x = mnist.to_tensor(image)
    target = int(model(x).argmax())
    attributions, delta = IntegratedGradients(model).attribute(
        x, target=target, n_steps=15, return_convergence_delta=True
    )
    probs = torch.softmax(model(x), dim=1)[0].detach()
    info = {
        "method": "IntegratedGradients",
        "n_steps": 15,
        "baseline": 0,
        "target": target,
        "prediction": target,
        "label": str(target),
        "probability": float(probs[target]),
        "target_label": str(target),
        "target_probability": float(probs[target]),
        "delta": float(delta),
        "ms": 12.5,
    }
    return mnist.png_bytes(image), attributions[0].detach().tolist(), info


def decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def coloured(pixels: np.ndarray) -> tuple[int, int]:
    """How many pixels are reddish, and how many bluish (grey and white are neither)."""
    r, b = pixels[..., 0], pixels[..., 2]
    return int(((r - b) > 30).sum()), int(((b - r) > 30).sum())


def test_an_image_explanation_draws_input_heatmap_and_overlay(digit):
    png, answer, info = digit
    body = json.dumps(answer).encode()
    shown = explanation(body, input=png, info=json.dumps(info), latency=0.034)

    assert isinstance(shown, ImageExplanation)
    assert shown.raw is body  # the answer as received, one attribute away
    assert torch.equal(shown.attributions, torch.tensor(answer, dtype=torch.float64))
    assert (shown.target, shown.prediction) == (info["target"], info["prediction"])
    assert shown.delta == info["delta"]

    pixels = decode(shown._repr_png_())
    assert pixels.shape == (400, 1050, 3)  # 10.5 x 4 inches at 100 dpi
    third = pixels.shape[1] // 3
    left, middle, right = pixels[:, :third], pixels[:, third : 2 * third], pixels[:, 2 * third :]
    red, blue = coloured(middle)
    assert red > 200 and blue > 200, (red, blue)  # a signed heatmap: both signs show
    assert coloured(left) == (0, 0)  # the input is drawn in grey
    bright = (left.min(axis=2) > 200) & (left.max(axis=2) - left.min(axis=2) < 10)
    assert bright.sum() > 0  # ... and the digit's white strokes are in it
    red_r, blue_r = coloured(right)
    assert red_r > 50 and blue_r > 50  # the overlay carries the colours over the input

    page = shown._repr_html_()
    assert page.startswith('<div class="jts-explanation jts-explanation-image">')
    assert '<img alt="explanation" src="data:image/png;base64,' in page
    for fact in ("predicted", "explained toward", "convergence delta", "34 ms round trip"):
        assert fact in page
    assert "IntegratedGradients, 15 steps" in repr(shown)


def test_kserve_envelopes_draw_the_same_attributions(digit):
    png, answer, info = digit
    flat = np.asarray(answer).reshape(-1).tolist()
    v1 = {"explanations": [answer]}
    v2 = {"outputs": [{"name": "explain", "shape": [1, 28, 28], "datatype": "FP64", "data": flat}]}
    want = torch.tensor(answer, dtype=torch.float64)
    for raw in (v1, v2, json.dumps(v1)):
        shown = explanation(raw, input=png)
        assert isinstance(shown, ImageExplanation)
        assert torch.allclose(shown.attributions, want)


def test_without_the_input_only_the_heatmap_is_drawn(digit):
    _, answer, _ = digit
    pixels = decode(explanation(answer)._repr_png_())
    assert pixels.shape == (400, 450, 3)
    red, blue = coloured(pixels)
    assert red > 200 and blue > 200


def test_text_gets_its_words_highlighted_by_importance():
    torch.manual_seed(1)
    embedding = nn.Embedding(6, 4)
    model = nn.Sequential(embedding, nn.Flatten(), nn.Linear(16, 2)).eval()
    ids = torch.tensor([[1, 2, 3, 0]])
    attributions, delta = LayerIntegratedGradients(model, embedding).attribute(
        ids, baselines=torch.zeros_like(ids), target=1, n_steps=15, return_convergence_delta=True
    )
    summed = attributions.sum(-1)[0]
    importances = (summed / torch.linalg.vector_norm(summed)).tolist()
    words = ["a", "<b>rave</b>", "review", "<pad>"]
    answer = {"words": words, "importances": importances, "delta": float(delta)}
    shown = explanation(json.dumps(answer), info={"target": 1, "prediction": 1})

    assert isinstance(shown, TextExplanation)
    assert shown.words == words and shown.delta == pytest.approx(float(delta))
    assert torch.allclose(shown.attributions, torch.tensor(importances, dtype=torch.float64))
    page = shown._repr_html_()
    assert page.count("<span ") == 4
    assert "&lt;b&gt;rave&lt;/b&gt;" in page and "<b>" not in page  # words are escaped
    for value in importances:
        colour = "220,38,38" if value >= 0 else "37,99,235"
        assert f'title="{value:+.4f}" style="background:rgba({colour},' in page
    pixels = decode(shown._repr_png_())
    assert pixels.shape[1] == 900
    red, blue = coloured(pixels)
    bound = max(abs(v) for v in importances)
    signs = {v > 0 for v in importances if abs(v) > 0.5 * bound}  # words coloured clearly
    assert (red > 20) == (True in signs) and (blue > 20) == (False in signs)


def test_other_tensors_get_a_bar_per_feature():
    shown = explanation([0.5, -0.25, 0.0, 1.0], info={"target": 0, "delta": 1e-3})
    assert isinstance(shown, FeatureExplanation)
    pixels = decode(shown._repr_png_())
    assert pixels.shape == (320, 800, 3)
    red, blue = coloured(pixels)
    assert red > 100 and blue > 100


def test_what_is_not_an_explanation_is_refused_clearly():
    with pytest.raises(ValueError, match="not an explanation answer"):
        explanation({"predictions": [1]})
    with pytest.raises(ValueError, match="no output named 'explain'"):
        explanation({"outputs": [{"name": "output-0", "shape": [1], "data": [1]}]})
    with pytest.raises(ValueError, match="2 words but 3 importances"):
        explanation({"words": ["a", "b"], "importances": [0.1, 0.2, 0.3]})
    with pytest.raises(ValueError, match="x-explanation header"):
        explanation([1.0, 2.0], info="[1, 2]")


def test_a_batch_of_rows_draws_its_first_row_with_that_rows_facts():
    """A ``[[...]]`` tensor request is answered one entry per row, its header one value per
    row; the drawing is of row 0 (bars per feature, not a 2-D image)."""
    answer = [[0.5, -0.25, 0.125], [0.0, 1.0, -1.0]]
    info = {
        "method": "IntegratedGradients",
        "target": [1, 0],
        "prediction": [1, 1],
        "delta": [0.01, 0.02],
    }
    shown = explanation(json.dumps(answer), info=json.dumps(info))
    assert isinstance(shown, FeatureExplanation)
    assert shown.attributions.tolist() == answer[0]
    assert (shown.target, shown.prediction, shown.delta) == (1, 1, 0.01)
    assert shown.raw == json.dumps(answer)  # the whole answer stays at hand
