"""Held-out evaluation on the served path (evaluation.py) and comparing versions (comparison.py).

Fast: the metrics (scikit-learn's and the numpy fallback agree), the pictures. Slow: digits
through a real engine, the served figures checked against the kernel model's in the test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from _digits_helpers import digits, digits_cnn, digits_mlp
from _notebook_helpers import engine, ts_env  # noqa: F401

from jupyter_torchserve import evaluation, scores
from jupyter_torchserve.comparison import as_image

PNG = b"\x89PNG\r\n\x1a\n"


def _no_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.metrics", None)


def test_the_numpy_fallback_gives_scikit_learns_classification_figures(monkeypatch):
    rng = np.random.default_rng(0)
    y, pred = rng.integers(0, 4, 300), rng.integers(0, 5, 300)  # class 4 is never a label
    classes = [0, 1, 2, 3, 4]
    with_sklearn = scores.classification_metrics(y, pred, classes)
    _no_sklearn(monkeypatch)
    without = scores.classification_metrics(y, pred, classes)
    assert without["confusion"] == with_sklearn["confusion"]
    assert without["accuracy"] == pytest.approx(with_sklearn["accuracy"])
    for key in ("precision", "recall"):
        assert without[key] == pytest.approx(with_sklearn[key])
    assert with_sklearn["recall"][4] == 0.0 and sum(map(sum, without["confusion"])) == 300


def test_the_numpy_fallback_gives_scikit_learns_regression_figures(monkeypatch):
    rng = np.random.default_rng(1)
    y = rng.normal(size=(200, 2))
    pred = y + rng.normal(scale=0.3, size=(200, 2))
    with_sklearn = scores.regression_metrics(y, pred)
    _no_sklearn(monkeypatch)
    assert scores.regression_metrics(y, pred) == pytest.approx(with_sklearn)


def test_a_report_draws_its_confusion_matrix_and_round_trips_as_json():
    report = evaluation.Evaluation(
        name="m",
        version="1.0",
        rows=4,
        task="classification",
        served=scores.classification_metrics(
            np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]), [0, 1]
        ),
        kernel=scores.classification_metrics(
            np.array([0, 1, 1, 0]), np.array([0, 1, 1, 0]), [0, 1]
        ),
        agreement=0.75,
        classes=[0, 1],
    )
    assert report.confusion_png().startswith(PNG)
    assert "served accuracy 0.7500, agreement 75.00%" == report.headline()
    assert json.loads(json.dumps(report.to_json()))["served"]["recall"] == {"0": 1.0, "1": 0.5}
    assert "<img" in report._repr_html_() and "precision 1" in repr(report)

    # stored, then shown by `describe --customized` as the deploy showed it, not as a dict
    from jupyter_torchserve.display import ModelDescription

    stored = json.loads(json.dumps(report.to_json()))
    back = evaluation.Evaluation.from_json(stored)
    assert repr(back) == repr(report) and back.confusion_png() == report.confusion_png()
    described = ModelDescription(
        "m",
        [{"modelVersion": "1.0", "customizedMetadata": {"evaluation": stored, "n": 1}}],
        reports=[back],
    )
    text = repr(described)
    assert "Evaluation of m 1.0 on 4 rows: served accuracy 0.7500" in text
    assert "Handler metadata (1.0)\nkey  value\n---  -----\nn    1" in text
    assert "served" not in text.split("Handler metadata")[1].split("Evaluation")[0]
    assert "<img" in described._repr_html_()


def test_rows_that_are_images_are_drawn_and_others_are_not():
    assert as_image(np.arange(64.0)).shape == (8, 8)  # digits' flat 8×8
    assert as_image(np.zeros((1, 28, 28))).shape == (28, 28)
    assert as_image(np.arange(10.0)) is None


def test_deploy_and_compare_take_held_out_data_by_name():
    from jupyter_torchserve.magics import build_parser

    p = build_parser()
    args = p.parse_args(["deploy", "m", "--name", "d", "--x-test", "X", "--y-test", "Y"])
    assert (args.x_test, args.y_test, args.metric) == ("X", "Y", None)
    args = p.parse_args(["compare", "d", "1.0", "2.0", "--x-test", "X", "--batch-size", "8"])
    assert (args.first, args.second, args.x_test, args.batch_size) == ("1.0", "2.0", "X", 8)


# -- through a real engine --------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_digits_served_accuracy_is_the_kernel_models_and_compare_finds_the_differing_rows(
    engine: dict,  # noqa: F811
) -> None:
    import torch

    from jupyter_torchserve.comparison import compare
    from jupyter_torchserve.deployment import deploy

    x_train, y_train, x_test, y_test = digits()
    good, weak = digits_mlp(x_train, y_train, 60, 0), digits_mlp(x_train, y_train, 3, 1)
    with torch.no_grad():
        good_pred = good(torch.from_numpy(x_test)).argmax(1).numpy()
        weak_pred = weak(torch.from_numpy(x_test)).argmax(1).numpy()
    kernel_accuracy = float(np.mean(good_pred == y_test))

    dep = deploy(good, "digits", x_test=x_test, y_test=y_test, progress="none")
    report = dep.evaluation
    assert report.rows == len(x_test) == 597
    assert report.served["accuracy"] == kernel_accuracy  # exactly: the same rows, served
    assert report.kernel["accuracy"] == kernel_accuracy and report.agreement == 1.0
    assert np.sum(report.served["confusion"]) == 597 and report.task == "classification"
    assert dep.schema["inputs"][0]["shape"][1:] == [64]  # the schema came from x_test
    assert dep.parity.ok  # its example: x_test's first row
    stored = evaluation.report_path(Path(engine["model_store"]), "digits", "1.0")
    assert json.loads(stored.read_text())["served"]["accuracy"] == kernel_accuracy
    assert "served accuracy" in repr(dep)

    deploy(weak, "digits", version="2.0", progress="none", example=torch.from_numpy(x_test[:1]))
    cmp = compare("digits", "1.0", "2.0", x_test, y_test, batch_size=100)
    expected = [int(i) for i in np.flatnonzero(good_pred != weak_pred)]
    assert expected and cmp.disagreeing == expected
    assert cmp.agreement == pytest.approx(1 - len(expected) / 597)
    assert cmp.answers["2.0"] == [int(weak_pred[i]) for i in expected]
    weak_accuracy = float(np.mean(weak_pred == y_test))
    assert cmp.metric_difference()["accuracy"] == pytest.approx(weak_accuracy - kernel_accuracy)
    assert set(cmp.latency_ms) == {"1.0", "2.0"} and cmp.latency_ms["1.0"]["p99"] > 0
    assert cmp.images_png().startswith(PNG) and len(cmp.images) == min(16, len(expected))


def test_the_report_is_stored_in_every_kind_of_archive_and_read_back(tmp_path: Path) -> None:
    import tarfile
    import zipfile

    from jupyter_torchserve.archive.manifest import METADATA_PATH
    from jupyter_torchserve.archive.report import evaluation_of, store_evaluation

    meta = {"format": "eager", "schema": {"inputs": []}}
    folder = tmp_path / "m-1.0"
    (folder / "MAR-INF").mkdir(parents=True)
    (folder / "MAR-INF" / "MANIFEST.json").write_text("{}")
    (folder / METADATA_PATH).write_text(json.dumps(meta))
    (folder / "weights.pt").write_bytes(b"w" * 100)
    mar = tmp_path / "m-1.0.mar"
    with zipfile.ZipFile(mar, "w") as z:
        for f in folder.rglob("*"):
            if f.is_file():
                z.write(f, f.relative_to(folder).as_posix())
    tgz = tmp_path / "m-1.0.tar.gz"
    with tarfile.open(tgz, "w:gz") as t:
        t.add(folder, arcname="m-1.0")
    report = {"served": {"accuracy": 0.5}, "rows": 2}
    for path in (mar, tgz, folder):
        assert evaluation_of(path) is None
        store_evaluation(path, report)
        assert evaluation_of(path) == report
        store_evaluation(path, {**report, "rows": 3})  # a second report replaces the first
        assert evaluation_of(path)["rows"] == 3
    with zipfile.ZipFile(mar) as z:  # the rest of the archive is kept as it was
        assert z.read("weights.pt") == b"w" * 100
        assert json.loads(z.read(METADATA_PATH))["format"] == "eager"
        assert z.namelist().count(METADATA_PATH) == 1
    from jupyter_torchserve.archive.errors import ArchiveError

    (tmp_path / "bad.mar").write_bytes(b"not a zip")
    with pytest.raises(ArchiveError, match="could not be stored"):
        store_evaluation(tmp_path / "bad.mar", report)


def test_flat_rows_are_refused_for_an_image_handler_with_what_to_give() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(N, H, W\)"):
        evaluation.held_out_rows(np.zeros((3, 64), np.float32), handler="image_classifier")
    with pytest.raises(ValueError, match="not one class per image"):
        evaluation.held_out_rows(np.zeros((3, 1, 8, 8)), handler="object_detector")


def test_image_rows_are_the_pngs_the_handler_receives_and_its_decoding_of_them() -> None:
    """Tensor rows become PNGs (as a deploy example does); the same PNGs given as bytes are
    sent unchanged and decode to the same model input; the kernel sees the handler's pixels."""
    import torch

    from jupyter_torchserve import payloads

    rng = np.random.default_rng(0)
    images = (rng.integers(0, 17, size=(3, 1, 8, 8)) / 16.0).astype(np.float32)
    rows = evaluation.held_out_rows(images, handler="image_classifier")
    assert isinstance(rows, evaluation.ImageRows) and len(rows) == 3
    assert all(r.startswith(PNG) for r in rows.requests)
    again = evaluation.held_out_rows(rows.requests, handler="image_classifier")
    assert again.requests == rows.requests and torch.equal(again.inputs, rows.inputs)
    decoded = payloads.image_to_tensor(rows.requests[1], None)
    assert torch.equal(rows.inputs[1:2], decoded) and rows.inputs.shape == (3, 1, 8, 8)
    # (N, H, W) rows are one-channel images; the deploy example is the first image
    flat = evaluation.held_out_rows(images[:, 0], handler="image_classifier")
    assert flat.requests == rows.requests
    assert evaluation.first_row(rows.requests, handler="image_classifier") == rows.requests[0]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_digit_images_through_image_classifier_score_as_the_kernel_on_the_handlers_pixels(
    engine: dict,  # noqa: F811
) -> None:
    """Digits as 8×8 images: each row is sent as the PNG the handler receives; the test
    decodes the same PNGs with the handler's own preprocessing and scores the kernel model."""
    import torch

    from jupyter_torchserve import payloads
    from jupyter_torchserve.archive.report import evaluation_of
    from jupyter_torchserve.client import Client
    from jupyter_torchserve.deployment import deploy
    from jupyter_torchserve.serverext import store

    x_train, y_train, x_test, y_test = digits()
    images_train, images_test = x_train.reshape(-1, 1, 8, 8), x_test.reshape(-1, 1, 8, 8)
    model = digits_cnn(images_train, y_train, 0)
    pixels = torch.cat(
        [
            payloads.image_to_tensor(payloads.tensor_to_png(torch.from_numpy(row), None), None)
            for row in images_test
        ]
    )
    with torch.no_grad():
        kernel_pred = model(pixels).argmax(1).numpy()
    kernel_accuracy = float(np.mean(kernel_pred == y_test))
    assert kernel_accuracy > 0.8  # a real classifier, so equality below means something

    dep = deploy(
        model,
        "digits-img",
        handler="image_classifier",
        x_test=images_test,
        y_test=y_test,
        progress="none",
    )
    report = dep.evaluation
    assert report.rows == 597 and report.task == "classification"
    assert report.served["accuracy"] == kernel_accuracy  # exactly: the same pixels, served
    assert report.kernel["accuracy"] == kernel_accuracy and report.agreement == 1.0
    assert dep.parity.ok and dep.schema["inputs"][0]["shape"][1:] == [1, 8, 8]

    # stored with the version: the archive's metadata, describe --customized, the sidebar
    assert evaluation_of(dep.archive_path)["served"]["accuracy"] == kernel_accuracy
    c = Client.from_info(engine)
    described = c.describe("digits-img", "1.0", customized=True)[0]["customizedMetadata"]
    assert described["evaluation"]["served"]["accuracy"] == kernel_accuracy
    assert described["evaluation"]["rows"] == 597
    url = Path(dep.archive_path).name
    assert store.evaluation(engine["model_store"], url)["agreement"] == 1.0

    # a second, weaker version: compare sends both the same images and finds where they differ
    from jupyter_torchserve.comparison import compare

    weak = digits_cnn(images_train, y_train, 1, steps=2)
    with torch.no_grad():
        weak_pred = weak(pixels).argmax(1).numpy()
    deploy(
        weak,
        "digits-img",
        version="2.0",
        handler="image_classifier",
        x_test=images_test[:1],
        progress="none",
    )
    cmp = compare("digits-img", "1.0", "2.0", images_test, y_test, handler="image_classifier")
    expected = [int(i) for i in np.flatnonzero(kernel_pred != weak_pred)]
    assert expected and cmp.disagreeing == expected
    assert cmp.answers["2.0"] == [int(weak_pred[i]) for i in expected]
    assert cmp.images[0].shape == (8, 8)  # drawn from the decoded pixels
