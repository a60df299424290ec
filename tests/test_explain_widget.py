"""Issue 17: an explanation whose target a person picks from the top-k classes.

``toward`` here is Captum's Integrated Gradients on an in-process CNN (what the handler runs),
so each pick is a real explanation toward another class; api.explain passes a function that
asks the engine instead (tests/test_magics_kernel.py runs that one).
"""

from __future__ import annotations

import base64
import io

import pytest
import torch
from captum.attr import IntegratedGradients
from PIL import Image
from torch import nn

from jupyter_torchserve.examples import mnist
from jupyter_torchserve.explain_view import explanation
from jupyter_torchserve.explain_widget import ExplanationPicker
from jupyter_torchserve.widgets import WIDGET_MIME


@pytest.fixture(scope="module")
def toward():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 5, stride=2), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 12 * 12, 10)
    ).eval()
    pixels = (torch.rand(28, 28) * 255).to(torch.uint8).numpy()
    x = mnist.to_tensor(pixels)
    probs = torch.softmax(model(x), dim=1)[0].detach()
    top_p, top_i = probs.topk(5)
    calls: list[int | None] = []

    def explain(target: int | None):
        calls.append(target)
        predicted = int(probs.argmax())
        t = predicted if target is None else target
        attributions = IntegratedGradients(model).attribute(x, target=t, n_steps=8)
        info = {
            "target": t,
            "prediction": predicted,
            "topk": [[int(i), str(int(i)), float(p)] for i, p in zip(top_i, top_p, strict=True)],
        }
        return explanation(attributions[0].tolist(), input=mnist.png_bytes(pixels), info=info)

    explain.calls = calls  # type: ignore[attr-defined]
    explain.top = [int(i) for i in top_i]  # type: ignore[attr-defined]
    return explain


def test_the_choices_are_the_top_k_classes_and_a_pick_explains_toward_it(toward):
    picker = ExplanationPicker(toward(None), toward)
    assert [index for _, index in picker.choices()] == toward.top
    assert picker.target == toward.top[0] and picker.attributions.shape == (1, 28, 28)
    second = toward.top[1]
    before = picker.attributions.clone()
    shown = picker.retarget(second)
    assert shown.target == second and picker.target == second
    assert not torch.equal(picker.attributions, before)  # another class, other attributions
    asked = len(toward.calls)
    picker.retarget(second)  # the class shown now: nothing to ask
    assert len(toward.calls) == asked and len(picker.history) == 2


def test_the_widget_redraws_when_a_class_is_picked(toward):
    picker = ExplanationPicker(toward(None), toward, mode="widget")
    view = picker.widget()
    dropdown, image = view.children[0], view.children[1]
    first_png = image.value
    assert Image.open(io.BytesIO(first_png)).format == "PNG"
    dropdown.value = toward.top[2]
    assert picker.target == toward.top[2] and image.value != first_png
    assert image.value == picker.current._repr_png_()
    bundle = picker._repr_mimebundle_()
    assert bundle[WIDGET_MIME]["model_id"] == view.model_id


def test_frontends_without_widgets_get_the_png_and_html(toward):
    picker = ExplanationPicker(toward(None), toward, mode="text")
    bundle = picker._repr_mimebundle_()
    assert WIDGET_MIME not in bundle
    png = base64.b64decode(bundle["image/png"])
    assert Image.open(io.BytesIO(png)).size == (1050, 400)  # input | heatmap | overlay
    assert "<img" in bundle["text/html"] and "explained toward" in bundle["text/html"]
    assert "ImageExplanation 1x28x28" in bundle["text/plain"]
