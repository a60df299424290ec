"""Issue 17 through a real engine: ``/explanations`` and KServe v1 ``:explain`` answer Captum.

The archives are written by ``jupyter_torchserve.archive`` from models defined here, served
by a real engine subprocess with real workers, and called over loopback HTTP. Every expected
value is computed in this process with Captum on the in-memory model.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import torch
from _engine_helpers import running_engine
from _explain_helpers import MEAN, STD, VOCAB, BagOfWords, TinyCNN, model_input, png
from captum.attr import IntegratedGradients, LayerIntegratedGradients
from PIL import Image
from torch import nn

from jupyter_torchserve.archive import archive
from jupyter_torchserve.explain_view import ImageExplanation, explanation
from jupyter_torchserve.prometheus import samples

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TOL = 1e-4


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture(scope="module")
def words_model() -> nn.Module:
    torch.manual_seed(1)
    return BagOfWords().eval()


@pytest.fixture(scope="module")
def engine(
    tmp_path_factory: pytest.TempPathFactory, cnn: nn.Module, words_model: nn.Module
) -> Iterator[dict[str, Any]]:
    """One engine serving ``digits`` (image_classifier, export), ``words`` (text, eager) and
    ``batched`` (digits' archive again, batches of up to 4 jobs)."""
    tmp = tmp_path_factory.mktemp("explain-engine")
    store = tmp / "store"
    store.mkdir()
    archive(
        cnn,
        name="digits",
        handler="image_classifier",
        example_inputs=model_input(png(0)),
        handler_config={"mean": [MEAN], "std": [STD]},
        export_path=store,
        format="export",
        preflight=False,
    )
    archive(
        words_model,
        name="words",
        handler="text_classifier",
        extra_files={"vocab.json": json.dumps(VOCAB)},
        export_path=store,
        format="eager",
        preflight=False,
    )
    with running_engine(tmp, model_store=str(store)) as (info, client):
        client.register("digits.mar", initial_workers=1)
        client.register("words.mar", initial_workers=1)
        client.register(
            "digits.mar", model_name="batched", batch_size=4, max_batch_delay=50, initial_workers=1
        )
        yield info


@pytest.fixture(scope="module")
def served(engine: dict[str, Any]) -> str:
    return engine["inference_address"]


def captum_ig(model: nn.Module, x: torch.Tensor, target: int) -> tuple[torch.Tensor, float]:
    attributions, delta = IntegratedGradients(model).attribute(
        x, target=target, n_steps=15, return_convergence_delta=True
    )
    return attributions[0].detach(), float(delta)


def header(r: requests.Response) -> dict[str, Any]:
    assert "x-explanation" in r.headers, dict(r.headers)
    return json.loads(r.headers["x-explanation"])


def test_explanations_route_answers_captum_ig_toward_the_predicted_class(served, cnn):
    image = png(1)
    x = model_input(image)
    predicted = int(cnn(x).argmax())
    want, want_delta = captum_ig(cnn, x, predicted)
    for method in (requests.post, requests.put):  # curl -d / curl -T
        r = method(
            f"{served}/explanations/digits",
            data=image,
            headers={"Content-Type": "image/png"},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        got = torch.tensor(r.json())
        assert got.shape == (1, 8, 8)  # the bare [C][H][W] list, as TorchServe answers
        assert torch.allclose(got, want, atol=TOL), (got - want).abs().max()
        info = header(r)
        assert info["target"] == info["prediction"] == predicted
        assert info["delta"] == pytest.approx(want_delta, abs=TOL)

    shown = explanation(r.content, input=image, info=r.headers["x-explanation"])
    assert isinstance(shown, ImageExplanation)
    assert Image.open(io.BytesIO(shown._repr_png_())).size == (1050, 400)


def test_a_form_field_names_the_target(served, cnn):
    image = png(2)
    r = requests.post(
        f"{served}/explanations/digits",
        files={"data": ("digit.png", image, "image/png")},
        data={"target": "4"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    want, _ = captum_ig(cnn, model_input(image), 4)
    assert header(r)["target"] == 4
    assert torch.allclose(torch.tensor(r.json()), want, atol=TOL)


def test_kserve_v1_explain_answers_explanations_per_instance(served, cnn):
    images = [png(3), png(4)]
    instances = [
        {"data": base64.b64encode(images[0]).decode(), "target": 2},
        {"data": base64.b64encode(images[1]).decode()},
    ]
    r = requests.post(
        f"{served}/v1/models/digits:explain", json={"instances": instances}, timeout=120
    )
    assert r.status_code == 200, r.text
    explanations = r.json()["explanations"]
    assert len(explanations) == 2
    second = model_input(images[1])
    for got, x, target in zip(
        explanations, [model_input(images[0]), second], [2, int(cnn(second).argmax())], strict=True
    ):
        want, _ = captum_ig(cnn, x, target)
        assert torch.allclose(torch.tensor(got), want, atol=TOL)


def bad_target(served: str) -> requests.Response:
    return requests.post(
        f"{served}/explanations/digits",
        files={"data": ("digit.png", png(5), "image/png")},
        data={"target": "9"},
        timeout=120,
    )


def test_a_bad_target_is_a_json_error_naming_it_and_the_model_keeps_answering(served):
    r = bad_target(served)
    assert r.status_code >= 400, r.text
    body = r.json()
    assert body["code"] == r.status_code and "target 9 is out of range" in body["message"]
    ok = requests.post(f"{served}/predictions/digits", data=png(5), timeout=120)
    assert ok.status_code == 200 and len(ok.json()) == 5


def test_a_bad_target_is_answered_400_as_torchserve_answers_a_prediction_exception(served):
    r = bad_target(served)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == 400


def test_text_explanations_are_words_importances_delta(served, words_model):
    r = requests.post(
        f"{served}/explanations/words",
        data=b"A good film, a bad plot!",
        headers={"Content-Type": "text/plain"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    words = ["a", "good", "film", ",", "a", "bad", "plot", "!"]
    ids = torch.tensor([[VOCAB.get(w, 1) for w in words]])
    target = int(words_model(ids).argmax())
    attributions, delta = LayerIntegratedGradients(words_model, words_model.embedding).attribute(
        ids,
        baselines=torch.zeros_like(ids),
        target=target,
        n_steps=15,
        return_convergence_delta=True,
    )
    summed = attributions.sum(-1)[0]
    assert body["words"] == words
    assert torch.allclose(
        torch.tensor(body["importances"]), summed / torch.linalg.vector_norm(summed), atol=TOL
    )
    assert body["delta"] == pytest.approx(float(delta), abs=TOL)
    assert header(r)["target"] == target


def test_kserve_v2_explain_answers_an_fp64_explain_output_with_the_facts(served, cnn):
    image = png(6)
    x = model_input(image)
    predicted = int(cnn(x).argmax())
    body = {
        "id": "r-6",
        "inputs": [
            {
                "name": "digit",
                "shape": [1],
                "datatype": "BYTES",
                "data": [base64.b64encode(image).decode()],
            }
        ],
    }
    for path in ("/v2/models/digits/explain", "/v2/models/digits/versions/1.0/explain"):
        r = requests.post(served + path, json=body, timeout=120)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["id"] == "r-6" and answer["model_name"] == "digits"
        (out,) = answer["outputs"]
        assert out["name"] == "explain" and out["datatype"] == "FP64"
        assert out["shape"] == [1, 8, 8]
        want, want_delta = captum_ig(cnn, x, predicted)
        got = torch.tensor(out["data"]).reshape(out["shape"])
        assert torch.allclose(got.float(), want, atol=TOL)
        assert out["parameters"]["target"] == predicted
        assert out["parameters"]["delta"] == pytest.approx(want_delta, abs=TOL)
    toward = {**body, "parameters": {"target": 3}}
    r = requests.post(served + "/v2/models/digits/explain", json=toward, timeout=120)
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    want, _ = captum_ig(cnn, x, 3)
    assert out["parameters"]["target"] == 3
    assert torch.allclose(torch.tensor(out["data"]).reshape(1, 8, 8).float(), want, atol=TOL)
    assert isinstance(explanation(r.content, input=image), ImageExplanation)
    bad = {**body, "parameters": {"target": 9}}
    r = requests.post(served + "/v2/models/digits/explain", json=bad, timeout=120)
    assert r.status_code == 400 and "target 9 is out of range" in r.json()["error"], r.text


def test_a_mixed_load_answers_every_prediction_and_every_explanation(engine, cnn):
    """Predictions and explanations sent at once to a batching model: each prediction gets
    the answer it gets alone (it never rode in an explanation's batch), each explanation
    Captum's attributions, and the metrics count each kind under its own label."""
    from concurrent.futures import ThreadPoolExecutor

    served = engine["inference_address"]
    images = [png(100 + i) for i in range(6)]
    alone = [
        requests.post(f"{served}/predictions/batched", data=im, timeout=120).json() for im in images
    ]
    want = [captum_ig(cnn, model_input(im), int(cnn(model_input(im)).argmax()))[0] for im in images]

    def send(i: int) -> tuple[str, int, requests.Response]:
        verb = "explanations" if i % 4 == 0 else "predictions"
        k = i % len(images)
        return verb, k, requests.post(f"{served}/{verb}/batched", data=images[k], timeout=300)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(48)))
    for verb, k, r in answers:
        assert r.status_code == 200, (verb, r.text)
        if verb == "predictions":  # batched float32 sums round apart in the last digits
            assert r.json() == pytest.approx(alone[k], abs=1e-5)
        else:
            assert torch.allclose(torch.tensor(r.json()), want[k], atol=TOL)
    page = requests.get(engine["metrics_address"] + "/metrics", timeout=30).text
    labels = {"model_name": "batched", "model_version": "1.0"}
    count = "jts_inference_latency_seconds_count"
    assert (count, {**labels, "kind": "explanation"}, 12) in samples(page)
    assert (count, {**labels, "kind": "prediction"}, 36 + len(images)) in samples(page)
