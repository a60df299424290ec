"""Figures of held-out predictions: accuracy, per-class precision/recall and the confusion
matrix for classifiers, MSE/MAE/R² for regressors, and the confusion matrix as a picture.

Why apart from evaluation.py: these are pure functions of labels and predictions (no
engine, no model), shared by the evaluation report and version comparison. They come from
scikit-learn when it is installed (the definitions users know, edge cases such as empty
classes handled as they expect); otherwise the same formulas in numpy, so serving never
needs scikit-learn.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def classification_metrics(y: np.ndarray, pred: np.ndarray, classes: list[int]) -> dict[str, Any]:
    """Accuracy, per-class precision and recall, and the confusion matrix (rows: true)."""
    try:
        from sklearn import metrics as skm
    except ImportError:
        return _numpy_classification(y, pred, classes)
    precision, recall, _, _ = skm.precision_recall_fscore_support(
        y, pred, labels=classes, zero_division=0
    )
    return {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "precision": dict(zip(classes, map(float, precision), strict=True)),
        "recall": dict(zip(classes, map(float, recall), strict=True)),
        "confusion": skm.confusion_matrix(y, pred, labels=classes).tolist(),
    }


def _numpy_classification(y: np.ndarray, pred: np.ndarray, classes: list[int]) -> dict[str, Any]:
    index = {c: i for i, c in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(y.tolist(), pred.tolist(), strict=True):
        if t in index and p in index:
            confusion[index[t], index[p]] += 1
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    hits = np.diag(confusion)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, hits / np.maximum(predicted, 1), 0.0)
        recall = np.where(actual > 0, hits / np.maximum(actual, 1), 0.0)
    return {
        "accuracy": float(np.mean(y == pred)) if len(y) else 0.0,
        "precision": dict(zip(classes, map(float, precision), strict=True)),
        "recall": dict(zip(classes, map(float, recall), strict=True)),
        "confusion": confusion.tolist(),
    }


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MSE and MAE over all output values, R² per output and averaged."""
    y, pred = y.reshape(len(y), -1).astype(np.float64), pred.reshape(len(pred), -1)
    try:
        from sklearn import metrics as skm
    except ImportError:
        err = pred - y
        residual, total = np.sum(err**2, axis=0), np.sum((y - y.mean(axis=0)) ** 2, axis=0)
        # per output, then averaged (scikit-learn's uniform_average); a constant target
        # scores 1 when it is hit exactly, else 0 (its force_finite rule)
        safe = np.where(total > 0, total, 1.0)
        per_output = np.where(total > 0, 1.0 - residual / safe, (residual == 0).astype(float))
        return {
            "mse": float(np.mean(err**2)),
            "mae": float(np.mean(np.abs(err))),
            "r2": float(np.mean(per_output)),
        }
    return {
        "mse": float(skm.mean_squared_error(y, pred)),
        "mae": float(skm.mean_absolute_error(y, pred)),
        "r2": float(skm.r2_score(y, pred)),
    }


def confusion_png(confusion: list[list[int]], classes: list[int], title: str) -> bytes:
    """A confusion matrix as a PNG (matplotlib's Agg: no display needed)."""
    from matplotlib.figure import Figure

    n = len(classes)
    fig = Figure(figsize=(1.2 + 0.45 * n, 1.0 + 0.45 * n), dpi=80)
    ax = fig.add_subplot()
    matrix = np.asarray(confusion)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), [str(c) for c in classes])
    ax.set_yticks(range(n), [str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = matrix.max() if matrix.size else 0
    for i in range(n):
        for j in range(n):
            color = "white" if matrix[i, j] > top / 2 else "black"
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color=color, fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
