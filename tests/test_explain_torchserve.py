"""Issue 17: our archives explain in a real TorchServe 0.12 (with captum) as in our engine.

* The ``image_classifier`` built-in (formats ``export`` and ``torchscript``): TorchServe and
  our engine answer the same ``/explanations`` body and the same ``x-explanation`` header
  for the same request, and both equal Captum's IG computed here.
* TorchServe's own ``VisionHandler`` (a TorchServe handler file, Captum through
  ``self.ig``) on the same model: the body our built-in answers for ``target=0`` is the one
  TorchServe's handler answers (same shape, same numbers), and our engine serves that
  TorchServe handler with the same answer too.
* The ``text_classifier`` built-in, eager: the same ``{"words", "importances", "delta"}``.

Runs when ``$JTS_TORCHSERVE_VENV`` (or ``.torchserve-venv``) holds torchserve==0.12.0 with
captum, and java is on PATH (``scripts/torchserve-venv.sh`` builds it); otherwise it skips.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch
from _engine_helpers import manifest, write_mar
from _explain_helpers import MEAN, STD, VOCAB, BagOfWords, TinyCNN, model_input, png
from _torchserve_helpers import (
    TorchServe,
    engine_beside,
    register,
    skip_reason,
    torchserve_venv,
    unregister,
)
from captum.attr import IntegratedGradients
from torch import nn

from jupyter_torchserve.archive import archive


def _skip() -> str | None:
    """Why not here; looked up on disk, so that collecting this module starts no process."""
    reason = skip_reason()
    if reason is None and not list(torchserve_venv().glob("lib/python*/site-packages/captum")):
        reason = "the TorchServe venv has no captum (re-run scripts/torchserve-venv.sh)"
    return reason


SKIP = _skip()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.torchserve,
    pytest.mark.skipif(SKIP is not None, reason=SKIP or ""),
    pytest.mark.timeout(900),
]

TOL = 1e-4
SAME = 1e-6  # the same handler code on the same model in two servers


# TorchServe's own vision handler, as a TorchServe user writes one (no torchvision here)
VISION_HANDLER = f"""
import numpy as np
import torch
from ts.torch_handler.vision_handler import VisionHandler


class Digits(VisionHandler):
    @staticmethod
    def image_processing(image):
        pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        return ((torch.from_numpy(pixels) - {MEAN}) / {STD})[None]

    def postprocess(self, data):
        return data.argmax(1).tolist()
"""


# -- servers ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def torchserve(tmp_path_factory: pytest.TempPathFactory, store: Path) -> Iterator[TorchServe]:
    with TorchServe(tmp_path_factory.mktemp("torchserve"), store) as server:
        yield server


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, store: Path) -> Iterator[dict[str, Any]]:
    with engine_beside(tmp_path_factory.mktemp("engine"), store) as info:
        yield info


@contextmanager
def served(ts: TorchServe, engine: dict[str, Any], mar: str, name: str) -> Iterator[None]:
    try:
        try:
            register(ts.management, mar, name)
        except RuntimeError as exc:
            raise AssertionError(f"TorchServe 0.12 did not load {mar}: {exc}\n{ts.logs()}") from exc
        register(engine["management_address"], mar, name)
        yield
    finally:
        unregister(ts.management, name)
        unregister(engine["management_address"], name)


def explain_both(
    ts: TorchServe, engine: dict[str, Any], name: str, **request: Any
) -> list[requests.Response]:
    answers = []
    for server, address in (("TorchServe", ts.inference), ("ours", engine["inference_address"])):
        r = requests.post(f"{address}/explanations/{name}", timeout=300, **request)
        assert r.status_code == 200, f"{server} answered {r.status_code}: {r.text[:2000]}"
        answers.append(r)
    return answers


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    torch.manual_seed(0)
    return TinyCNN().eval()


def captum_ig(model: nn.Module, x: torch.Tensor, target: int) -> tuple[torch.Tensor, float]:
    attributions, delta = IntegratedGradients(model).attribute(
        x, target=target, n_steps=15, return_convergence_delta=True
    )
    return attributions[0].detach(), float(delta)


# -- our image_classifier built-in ----------------------------------------------------------
@pytest.mark.parametrize("fmt", ["export", "torchscript"])
def test_our_image_archive_explains_the_same_in_torchserve(fmt, cnn, store, torchserve, engine):
    name = f"explain-{fmt}"
    result = archive(
        cnn,
        name=name,
        handler="image_classifier",
        example_inputs=model_input(png(0)),
        handler_config={"mean": [MEAN], "std": [STD]},
        export_path=store,
        format=fmt,
        force=True,
    )
    with served(torchserve, engine, result.path.name, name):
        for seed, target in [(1, None), (2, 3)]:
            image = png(seed)
            x = model_input(image)
            request: dict[str, Any] = {"files": {"data": ("digit.png", image, "image/png")}}
            if target is not None:
                request["data"] = {"target": str(target)}
            else:
                target = int(cnn(x).argmax())
            theirs, ours = explain_both(torchserve, engine, name, **request)
            got_theirs, got_ours = torch.tensor(theirs.json()), torch.tensor(ours.json())
            assert got_theirs.shape == got_ours.shape == (1, 8, 8)
            assert torch.allclose(got_theirs, got_ours, atol=SAME)
            want, want_delta = captum_ig(cnn, x, target)
            assert torch.allclose(got_theirs, want, atol=TOL)
            info_theirs = json.loads(theirs.headers["x-explanation"])
            info_ours = json.loads(ours.headers["x-explanation"])
            assert info_theirs["target"] == info_ours["target"] == target
            assert info_theirs["delta"] == pytest.approx(want_delta, abs=TOL)
            assert info_ours["delta"] == pytest.approx(want_delta, abs=TOL)
        # a bad target: TorchServe answers the handler's PredictionException code and message
        r = requests.post(
            f"{torchserve.inference}/explanations/{name}",
            files={"data": ("digit.png", png(1), "image/png")},
            data={"target": "9"},
            timeout=300,
        )
        assert r.status_code == 400, r.text
        assert "target 9 is out of range: the model has 5 outputs" in r.json()["message"]


def test_a_batch_mixing_predictions_and_explanations_answers_each_its_own(
    cnn, store, torchserve, engine
):
    """TorchServe's frontend puts /predictions and /explanations jobs in one batch."""
    from concurrent.futures import ThreadPoolExecutor

    result = archive(
        cnn,
        name="explain-mixed",
        handler="image_classifier",
        example_inputs=model_input(png(0)),
        handler_config={"mean": [MEAN], "std": [STD]},
        export_path=store,
        format="export",
        force=True,
    )
    params = {
        "url": result.path.name,
        "initial_workers": 1,
        "batch_size": 3,
        "max_batch_delay": 5000,  # the three requests below arrive well within it
        "synchronous": "true",
    }
    images = [png(10 + i) for i in range(3)]
    routes = ["predictions", "explanations", "predictions"]
    for server, management, inference in (
        ("TorchServe", torchserve.management, torchserve.inference),
        ("ours", engine["management_address"], engine["inference_address"]),
    ):
        r = requests.post(f"{management}/models", params=params, timeout=300)
        assert r.status_code == 200, f"{server}: {r.text}"
        try:
            with ThreadPoolExecutor(3) as pool:
                calls = [
                    pool.submit(
                        requests.post, f"{inference}/{route}/explain-mixed", data=image, timeout=300
                    )
                    for route, image in zip(routes, images, strict=True)
                ]
                answers = [call.result() for call in calls]
        finally:
            unregister(management, "explain-mixed")
        for route, image, answer in zip(routes, images, answers, strict=True):
            assert answer.status_code == 200, f"{server} {route}: {answer.text}"
            x = model_input(image)
            if route == "predictions":
                probs = torch.softmax(cnn(x), dim=1)[0].detach()
                got = list(answer.json().values())
                assert got == pytest.approx(probs.topk(5).values.tolist(), abs=1e-5), server
            else:
                want, _ = captum_ig(cnn, x, int(cnn(x).argmax()))
                assert torch.allclose(torch.tensor(answer.json()), want, atol=TOL), server


# -- TorchServe's own VisionHandler ---------------------------------------------------------
def scripted(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(model), buffer)
    return buffer.getvalue()


def test_torchserves_vision_handler_and_ours_answer_the_same(cnn, store, torchserve, engine):
    write_mar(
        store / "ts-vision.mar",
        {"model.pt": scripted(cnn), "handler.py": VISION_HANDLER},
        manifest("ts-vision", "1.0", "model.pt", "handler.py"),
    )
    ours = archive(
        cnn,
        name="jts-vision",
        handler="image_classifier",
        example_inputs=model_input(png(0)),
        handler_config={"mean": [MEAN], "std": [STD]},
        export_path=store,
        format="torchscript",
        force=True,
    )
    image = png(4)
    want, _ = captum_ig(cnn, model_input(image), 0)
    with served(torchserve, engine, "ts-vision.mar", "ts-vision"):
        # TorchServe's handler explains toward class 0 when the request names no target
        reference, compat = explain_both(torchserve, engine, "ts-vision", data=image)
        assert torch.allclose(torch.tensor(reference.json()), want, atol=TOL)
        assert torch.allclose(
            torch.tensor(compat.json()), torch.tensor(reference.json()), atol=SAME
        )
        with served(torchserve, engine, ours.path.name, "jts-vision"):
            request = {"files": {"data": ("d.png", image, "image/png")}, "data": {"target": "0"}}
            theirs, mine = explain_both(torchserve, engine, "jts-vision", **request)
    for r in (theirs, mine):
        got = torch.tensor(r.json())
        assert got.shape == torch.tensor(reference.json()).shape  # same nesting: [C][H][W]
        assert torch.allclose(got, torch.tensor(reference.json()), atol=TOL)


# -- our text_classifier built-in -----------------------------------------------------------
def test_our_text_archive_explains_the_same_in_torchserve(store, torchserve, engine):
    torch.manual_seed(1)
    model = BagOfWords().eval()
    result = archive(
        model,
        name="explain-words",
        handler="text_classifier",
        extra_files={"vocab.json": json.dumps(VOCAB)},
        export_path=store,
        format="eager",
        force=True,
    )
    request = {"data": b"a good film, a bad plot!", "headers": {"Content-Type": "text/plain"}}
    with served(torchserve, engine, result.path.name, "explain-words"):
        theirs, ours = explain_both(torchserve, engine, "explain-words", **request)
    a, b = theirs.json(), ours.json()
    assert a["words"] == b["words"] == ["a", "good", "film", ",", "a", "bad", "plot", "!"]
    assert np.allclose(a["importances"], b["importances"], atol=SAME)
    assert a["delta"] == pytest.approx(b["delta"], abs=SAME)
    assert json.loads(theirs.headers["x-explanation"])["method"] == "LayerIntegratedGradients"
