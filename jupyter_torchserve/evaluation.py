"""Evaluation on held-out data, as the served model sees it, beside the model in the kernel.

Why through the served endpoint: what users get is what the handler, the archive's format
and the worker make of a request, so the figures that count are computed from served
answers. The in-kernel model gets the very same rows, so the report can put both side by
side and say how often they agree (a disagreement points at the handler or the format, not
at the model).

``x_test`` goes in batches of ``batch_size`` rows, one JSON request each (the tensor
handler takes a batch per request and answers one output per row), with a progress bar:
held-out sets need not fit in one request. Metrics come from scikit-learn when it is
installed (the definitions users know, edge cases such as empty classes handled as they
expect); otherwise the same formulas in numpy, so serving never needs scikit-learn.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .api import decode_response, engine_client
from .client import Client
from .display import esc, html_table, text_table
from .parity import DEFAULT_TOLERANCE, model_output

#: Rows per request when none is given: small enough for any handler's request limits.
DEFAULT_BATCH = 64

MetricFn = Callable[[np.ndarray, np.ndarray], float]


# -- sending rows ------------------------------------------------------------------------------
def as_rows(x: Any, model: Any = None) -> Any:
    """``x`` as a tensor of rows; floating data takes the model's own float type, as the
    served handler casts JSON numbers to the archive's schema type."""
    import torch

    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    params = list(model.parameters())[:1] if hasattr(model, "parameters") else []
    if t.is_floating_point() and params and params[0].is_floating_point():
        t = t.to(params[0].dtype)
    return t


def batches(n: int, batch_size: int) -> Iterator[slice]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def served_outputs(
    c: Client,
    name: str,
    version: str | None,
    rows: Any,
    batch_size: int = DEFAULT_BATCH,
    progress: str | None = None,
    latencies: list[float] | None = None,
) -> np.ndarray:
    """The served answers to ``rows``, sent ``batch_size`` rows per request (a progress bar
    counts rows); each request's seconds are appended to ``latencies`` when given."""
    from tqdm.auto import tqdm

    out: list[np.ndarray] = []
    label = f"{name} {version or '(default)'}"
    with tqdm(total=len(rows), desc=label, unit="row", disable=progress == "none") as bar:
        for part in batches(len(rows), batch_size):
            body = json.dumps(rows[part].tolist()).encode()
            t = time.perf_counter()
            resp = c.predict(name, body, version=version, content_type="application/json")
            if latencies is not None:
                latencies.append(time.perf_counter() - t)
            answer = np.asarray(decode_response(resp), dtype=np.float64)
            if len(answer) != part.stop - part.start:
                raise ValueError(
                    f"{label} answered {len(answer)} outputs to a request of "
                    f"{part.stop - part.start} rows: evaluation needs a handler that answers "
                    "one output per row (the built-in tensor handler does)"
                )
            out.append(answer)
            bar.update(part.stop - part.start)
    return np.concatenate(out) if out else np.zeros((0,))


def kernel_outputs(model: Any, rows: Any, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """``model`` on the same rows, in the same batches (eval mode, no autograd)."""
    parts = []
    for part in batches(len(rows), batch_size):
        out = model_output(model, rows[part])
        out = out[0] if isinstance(out, (tuple, list)) else out
        parts.append(out.detach().cpu().double().numpy())
    return np.concatenate(parts) if parts else np.zeros((0,))


# -- metrics -----------------------------------------------------------------------------------
def is_classifier(outputs: np.ndarray, y: np.ndarray | None) -> bool:
    """Scores per class (2-D, several columns) against integer labels."""
    integer_y = y is None or np.issubdtype(np.asarray(y).dtype, np.integer)
    return outputs.ndim == 2 and outputs.shape[1] > 1 and integer_y


def predictions(outputs: np.ndarray, classifier: bool) -> np.ndarray:
    return outputs.argmax(axis=1) if classifier else outputs.reshape(len(outputs), -1)


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


def agreement(a: np.ndarray, b: np.ndarray, classifier: bool, tolerance: float) -> np.ndarray:
    """Per row: do two sets of outputs give the same answer (class, or values within
    ``tolerance``)?"""
    if classifier:
        return a.argmax(axis=1) == b.argmax(axis=1)
    diff = np.abs(a.reshape(len(a), -1) - b.reshape(len(b), -1))
    return diff.max(axis=1, initial=0.0) <= tolerance


def metrics_of(
    outputs: np.ndarray,
    y: np.ndarray | None,
    classifier: bool,
    classes: list[int],
    metric: MetricFn | None,
) -> dict[str, Any]:
    if y is None:
        return {}
    pred = predictions(outputs, classifier)
    found = classification_metrics(y, pred, classes) if classifier else regression_metrics(y, pred)
    if metric is not None:
        found["custom"] = float(metric(y, pred))
    return found


# -- the report --------------------------------------------------------------------------------
@dataclass
class Evaluation:
    """Kernel and served figures on the same rows, and how often the two agree."""

    name: str
    version: str | None
    rows: int
    task: str  # "classification", "regression" or "agreement" (no labels)
    served: dict[str, Any]
    kernel: dict[str, Any]
    agreement: float
    classes: list[int] = field(default_factory=list)
    metric_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        """What is stored with the version (next to its archive) and shown by the sidebar."""
        return {
            "name": self.name,
            "version": self.version,
            "rows": self.rows,
            "task": self.task,
            "agreement": self.agreement,
            "classes": self.classes,
            "metric_name": self.metric_name,
            "served": _json_keys(self.served),
            "kernel": _json_keys(self.kernel),
        }

    def table(self) -> tuple[list[str], list[list[Any]]]:
        rows: list[list[Any]] = []
        for key in ("accuracy", "mse", "mae", "r2", "custom"):
            if key in self.served:
                label = self.metric_name or "custom" if key == "custom" else key
                rows.append([label, _fmt(self.kernel.get(key)), _fmt(self.served[key])])
        for c in self.classes:
            for key in ("precision", "recall"):
                rows.append([f"{key} {c}", _fmt(self.kernel[key][c]), _fmt(self.served[key][c])])
        rows.append(["agreement kernel/served", "", f"{100 * self.agreement:.2f}%"])
        return ["metric", "kernel", "served"], rows

    def confusion_png(self) -> bytes | None:
        """The served confusion matrix drawn as a picture (None for regressors)."""
        if "confusion" not in self.served:
            return None
        return confusion_png(self.served["confusion"], self.classes, f"{self.name} served")

    def headline(self) -> str:
        """One line: the served figure that matters most, and the agreement."""
        agree = f"agreement {100 * self.agreement:.2f}%"
        if "accuracy" in self.served:
            return f"served accuracy {self.served['accuracy']:.4f}, {agree}"
        if "mse" in self.served:
            return f"served MSE {self.served['mse']:.4g}, {agree}"
        return agree

    @property
    def title(self) -> str:
        return f"Evaluation of {self.name} {self.version or ''} on {self.rows} rows".strip()

    def __repr__(self) -> str:
        return f"{self.title}: {self.headline()}\n{text_table(*self.table())}"

    def _repr_html_(self) -> str:
        out = [html_table(*self.table(), f"{self.title}: {self.headline()}")]
        png = self.confusion_png()
        if png is not None:
            data = base64.b64encode(png).decode()
            alt = esc(f"confusion matrix of {self.name}")
            out.append(f'<img alt="{alt}" src="data:image/png;base64,{data}"/>')
        return "".join(out)


def _fmt(value: Any) -> str:
    return "" if value is None else f"{value:.4g}"


def _json_keys(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        k: ({str(c): v for c, v in m.items()} if isinstance(m, dict) else m)
        for k, m in metrics.items()
    }


def report_path(store: Path, name: str, version: str) -> Path:
    return store / f"{name}-{version}.evaluation.json"


def store_report(store: Path, report: Evaluation) -> Path | None:
    """Keep the report beside the version's archive (None: the store is not writable, which
    never fails a deploy: the report is still returned)."""
    path = report_path(store, report.name, str(report.version))
    try:
        path.write_text(json.dumps(report.to_json(), indent=1))
    except OSError:
        return None
    return path


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


def evaluate(
    name: str,
    model: Any,
    x_test: Any,
    y_test: Any = None,
    version: str | None = None,
    *,
    metric: MetricFn | None = None,
    batch_size: int = DEFAULT_BATCH,
    tolerance: float = DEFAULT_TOLERANCE,
    progress: str | None = None,
    c: Client | None = None,
) -> Evaluation:
    """Judge ``name`` (``version``; None: the default route) on ``x_test``/``y_test``.

    Classifiers (scores per class, integer labels) get accuracy, per-class precision/recall
    and a confusion matrix; others MSE/MAE/R². ``metric(y_true, y_pred)`` adds a figure of
    your own. Without ``y_test`` only the agreement between kernel and served is reported.
    """
    rows = as_rows(x_test, model)
    y = None if y_test is None else np.asarray(getattr(y_test, "numpy", lambda: y_test)())
    if y is not None and len(y) != len(rows):
        raise ValueError(f"x_test has {len(rows)} rows but y_test has {len(y)}")
    with engine_client(c) as c:
        served = served_outputs(c, name, version, rows, batch_size, progress)
    kernel = kernel_outputs(model, rows, batch_size)
    classifier = is_classifier(kernel, y)
    classes = classes_of(kernel, y) if classifier else []
    task = "agreement" if y is None else "classification" if classifier else "regression"
    return Evaluation(
        name=name,
        version=version,
        rows=len(rows),
        task=task,
        served=metrics_of(served, y, classifier, classes, metric),
        kernel=metrics_of(kernel, y, classifier, classes, metric),
        agreement=float(np.mean(agreement(kernel, served, classifier, tolerance))),
        classes=classes,
        metric_name=getattr(metric, "__name__", None) if metric else None,
    )


def classes_of(outputs: np.ndarray, y: np.ndarray | None) -> list[int]:
    """Every class the model scores, and any label beyond them."""
    found = set(range(outputs.shape[1]))
    if y is not None:
        found |= {int(v) for v in np.unique(y)}
    return sorted(found)


def evaluate_deployment(c: Client, dep: Any, model: Any, opts: Any) -> Evaluation:
    """A deploy's held-out evaluation (`deployment.Deployment`, `DeployOptions`) on the served path, kept next to the archive in the store
    (``<name>-<version>.evaluation.json``) for the sidebar and later sessions."""
    report = evaluate(
        dep.name,
        model,
        opts.x_test,
        opts.y_test,
        None if dep.is_default else dep.version,
        metric=opts.metric,
        batch_size=opts.eval_batch_size,
        tolerance=opts.tolerance,
        progress="none" if opts.progress == "none" else None,
        c=c,
    )
    report.version = dep.version
    store_report(Path(dep.info["model_store"]), report)
    return report
