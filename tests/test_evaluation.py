"""Held-out evaluation on the served path (evaluation.py) and comparing versions (comparison.py).

Fast: the metrics (scikit-learn's and the numpy fallback agree), the pictures. Slow: digits
through a real engine, the served figures checked against the kernel model's in the test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _notebook_helpers import engine, ts_env  # noqa: F401

from jupyter_torchserve import evaluation
from jupyter_torchserve.comparison import as_image

PNG = b"\x89PNG\r\n\x1a\n"


def _no_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.metrics", None)


def test_the_numpy_fallback_gives_scikit_learns_classification_figures(monkeypatch):
    rng = np.random.default_rng(0)
    y, pred = rng.integers(0, 4, 300), rng.integers(0, 5, 300)  # class 4 is never a label
    classes = [0, 1, 2, 3, 4]
    with_sklearn = evaluation.classification_metrics(y, pred, classes)
    _no_sklearn(monkeypatch)
    without = evaluation.classification_metrics(y, pred, classes)
    assert without["confusion"] == with_sklearn["confusion"]
    assert without["accuracy"] == pytest.approx(with_sklearn["accuracy"])
    for key in ("precision", "recall"):
        assert without[key] == pytest.approx(with_sklearn[key])
    assert with_sklearn["recall"][4] == 0.0 and sum(map(sum, without["confusion"])) == 300


def test_the_numpy_fallback_gives_scikit_learns_regression_figures(monkeypatch):
    rng = np.random.default_rng(1)
    y = rng.normal(size=(200, 2))
    pred = y + rng.normal(scale=0.3, size=(200, 2))
    with_sklearn = evaluation.regression_metrics(y, pred)
    _no_sklearn(monkeypatch)
    assert evaluation.regression_metrics(y, pred) == pytest.approx(with_sklearn)


def test_a_report_draws_its_confusion_matrix_and_round_trips_as_json():
    report = evaluation.Evaluation(
        name="m",
        version="1.0",
        rows=4,
        task="classification",
        served=evaluation.classification_metrics(
            np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]), [0, 1]
        ),
        kernel=evaluation.classification_metrics(
            np.array([0, 1, 1, 0]), np.array([0, 1, 1, 0]), [0, 1]
        ),
        agreement=0.75,
        classes=[0, 1],
    )
    assert report.confusion_png().startswith(PNG)
    assert "served accuracy 0.7500, agreement 75.00%" == report.headline()
    assert json.loads(json.dumps(report.to_json()))["served"]["recall"] == {"0": 1.0, "1": 0.5}
    assert "<img" in report._repr_html_() and "precision 1" in repr(report)


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
def _digits() -> tuple[Any, Any, Any, Any]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return x[:1200], y[:1200], x[1200:], y[1200:]


def _train(x: Any, y: Any, epochs: int, seed: int) -> Any:
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model.eval()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_digits_served_accuracy_is_the_kernel_models_and_compare_finds_the_differing_rows(
    engine: dict,  # noqa: F811
) -> None:
    import torch

    from jupyter_torchserve.comparison import compare
    from jupyter_torchserve.deployment import deploy

    x_train, y_train, x_test, y_test = _digits()
    good, weak = _train(x_train, y_train, 60, 0), _train(x_train, y_train, 3, 1)
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
