"""Evaluation on held-out data, as the served model sees it, beside the model in the kernel.

Why through the served endpoint: what users get is what the handler, the archive's format
and the worker make of a request, so the figures that count are computed from served
answers. The in-kernel model gets the very same rows, so the report can put both side by
side and say how often they agree (a disagreement points at the handler or the format, not
at the model).

``x_test`` goes in batches of ``batch_size`` rows, one JSON request each (the tensor
handler takes a batch per request and answers one output per row), with a progress bar:
held-out sets need not fit in one request. For ``image_classifier`` each row goes as the
image that handler receives (a PNG, as the deploy example is sent) and the kernel model
gets what the handler's own preprocessing decodes from it. The figures are
:mod:`.scores`'.
"""

from __future__ import annotations

import base64
import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import content, payloads
from .api import decode_response, engine_client
from .client import Client
from .display import esc, html_table, text_table
from .parity import DEFAULT_TOLERANCE, labels_from, model_output
from .scores import classification_metrics, confusion_png, regression_metrics

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


def first_row(x: Any, model: Any = None, handler: Any = None) -> Any:
    """The deploy example when only ``x_test`` is given: its first row (an image handler's
    list of image bytes or paths gives its first image)."""
    if (
        isinstance(handler, str)
        and handler in payloads.IMAGE_HANDLERS
        and not (payloads.tensor_like(x))
    ):
        return x[0]
    return as_rows(x, model)[:1]


def batches(n: int, batch_size: int) -> Iterator[slice]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


@dataclass
class ImageRows:
    """Held-out images for an image handler: one PNG request per row, and the model input
    the handler's own preprocessing makes of each (:func:`payloads.image_rows`)."""

    requests: list[bytes]
    inputs: Any  # (N, C, H, W)
    labels: dict[str, str] | None = None  # index_to_name.json: served labels -> class index

    def __len__(self) -> int:
        return len(self.requests)


def held_out_rows(
    x: Any,
    model: Any = None,
    handler: Any = None,
    handler_config: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
) -> Any:
    """``x`` as the served model receives it: images for ``image_classifier``, else a tensor
    of rows (:func:`as_rows`)."""
    if isinstance(handler, str) and handler in payloads.IMAGE_HANDLERS:
        if handler != "image_classifier":
            raise ValueError(
                f"held-out evaluation reads classes from the answers: {handler} answers "
                "are not one class per image (image_classifier and tensor handlers are)"
            )
        requests, inputs = payloads.image_rows(x, handler_config, handler)
        return ImageRows(requests, as_rows(inputs, model), labels)
    return as_rows(x, model)


def labels_for(rows: Any, y_test: Any) -> np.ndarray | None:
    """``y_test`` as an array with one label per held-out row (None: no labels given)."""
    if y_test is None:
        return None
    y = np.asarray(getattr(y_test, "numpy", lambda: y_test)())
    if len(y) != len(rows):
        raise ValueError(f"x_test has {len(rows)} rows but y_test has {len(y)}")
    return y


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
    counts rows); each request's seconds are appended to ``latencies`` when given.

    :class:`ImageRows` go one image per request, as an image handler takes them; their
    ``{label: probability}`` answers become a row of class scores (classes outside the
    top-k score 0, so the served class is the row's argmax).
    """
    from tqdm.auto import tqdm

    out: list[np.ndarray] = []
    label = f"{name} {version or '(default)'}"
    images = isinstance(rows, ImageRows)
    step = 1 if images else batch_size
    with tqdm(total=len(rows), desc=label, unit="row", disable=progress == "none") as bar:
        for part in batches(len(rows), step):
            if images:
                body, ctype = rows.requests[part.start], content.sniff(rows.requests[part.start])
            else:
                body, ctype = json.dumps(rows[part].tolist()).encode(), "application/json"
            t = time.perf_counter()
            resp = c.predict(name, body, version=version, content_type=ctype)
            if latencies is not None:
                latencies.append(time.perf_counter() - t)
            if images:
                out.append(_class_scores(decode_response(resp), rows.labels, label))
            else:
                answer = np.asarray(decode_response(resp), dtype=np.float64)
                if len(answer) != part.stop - part.start:
                    raise ValueError(
                        f"{label} answered {len(answer)} outputs to a request of "
                        f"{part.stop - part.start} rows: evaluation needs a handler that answers "
                        "one output per row (the built-in tensor handler does)"
                    )
                out.append(answer)
            bar.update(part.stop - part.start)
    if images:
        return _score_matrix(out)
    return np.concatenate(out) if out else np.zeros((0,))


def _class_scores(answer: Any, labels: dict[str, str] | None, who: str) -> np.ndarray:
    """An image classifier's ``{label: probability}`` as ``[[index, probability], ...]``."""
    if not isinstance(answer, dict) or not answer:
        raise ValueError(f"{who} answered {str(answer)[:200]!r}, not {{label: probability}}")
    by_name = {str(v): int(k) for k, v in (labels or {}).items()}
    pairs = []
    for key, p in answer.items():
        index = by_name.get(str(key))
        if index is None:
            try:
                index = int(key)
            except ValueError:
                raise ValueError(
                    f"{who} answered the label {key!r}, which has no class index: "
                    "give the index_to_name.json the archive has"
                ) from None
        pairs.append((index, float(p)))
    return np.asarray(pairs, dtype=np.float64)


def _score_matrix(answers: list[np.ndarray]) -> np.ndarray:
    width = 1 + max((int(a[:, 0].max()) for a in answers), default=-1)
    scores = np.zeros((len(answers), max(width, 2)))
    for i, pairs in enumerate(answers):
        scores[i, pairs[:, 0].astype(int)] = pairs[:, 1]
    return scores


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
        return asdict(self) | {"served": _json_keys(self.served), "kernel": _json_keys(self.kernel)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evaluation:
        """A stored report (to_json's) back as the report the deploy showed, for
        `describe --customized`: per-class figures keyed by their class again."""

        def classes_back(metrics: dict[str, Any]) -> dict[str, Any]:
            return {
                k: ({int(c): v for c, v in m.items()} if isinstance(m, dict) else m)
                for k, m in metrics.items()
            }

        return cls(
            name=data["name"],
            version=data.get("version"),
            rows=int(data["rows"]),
            task=data["task"],
            served=classes_back(data["served"]),
            kernel=classes_back(data["kernel"]),
            agreement=float(data["agreement"]),
            classes=[int(c) for c in data.get("classes") or []],
            metric_name=data.get("metric_name"),
        )

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


def evaluate(
    name: str,
    model: Any,
    x_test: Any,
    y_test: Any = None,
    version: str | None = None,
    *,
    handler: Any = None,
    handler_config: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
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

    With ``handler="image_classifier"`` each row is sent as the image that handler receives
    (``handler_config`` as deployed, ``labels`` its ``index_to_name.json``) and the kernel
    model gets what the handler's preprocessing makes of that image.
    """
    rows = held_out_rows(x_test, model, handler, handler_config, labels)
    y = labels_for(rows, y_test)
    with engine_client(c) as c:
        served = served_outputs(c, name, version, rows, batch_size, progress)
    inputs = rows.inputs if isinstance(rows, ImageRows) else rows
    kernel = kernel_outputs(model, inputs, batch_size)
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
    """A deploy's held-out evaluation (`deployment.Deployment`, `DeployOptions`) on the
    served path, stored with the version: in its archive's metadata (``evaluation``, what
    ``describe --customized`` and the sidebar show) and beside it in the store
    (``<name>-<version>.evaluation.json``) for later sessions."""
    from .archive.errors import ArchiveError
    from .archive.report import store_evaluation

    report = evaluate(
        dep.name,
        model,
        opts.x_test,
        opts.y_test,
        None if dep.is_default else dep.version,
        handler=opts.handler if isinstance(opts.handler, str) else None,
        handler_config=opts.handler_config,
        labels=labels_from(opts.extra_files),
        metric=opts.metric,
        batch_size=opts.eval_batch_size,
        tolerance=opts.tolerance,
        progress="none" if opts.progress == "none" else None,
        c=c,
    )
    report.version = dep.version
    store_report(Path(dep.info["model_store"]), report)
    try:
        store_evaluation(dep.archive_path, report.to_json())
    except ArchiveError as exc:  # the report is still returned and kept beside the archive
        warnings.warn(str(exc), stacklevel=2)
    return report
