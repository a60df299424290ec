"""Compare two served versions of a model on the same held-out rows.

Both versions get the same rows through their versioned URLs (never the default route, so
a running canary cannot mix them up), in the same batches. The report says how often they
agree, how their metrics differ when labels are given, which rows they disagree on (drawn as
images when the rows are images), and each version's request latency p50/p99.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .api import engine_client
from .client import Client
from .display import esc, html_table, text_table
from .evaluation import (
    DEFAULT_BATCH,
    ImageRows,
    MetricFn,
    agreement,
    classes_of,
    held_out_rows,
    is_classifier,
    labels_for,
    metrics_of,
    predictions,
    served_outputs,
)
from .parity import DEFAULT_TOLERANCE

#: At most this many disagreeing rows are drawn; all of them are listed in ``disagreeing``.
MAX_DRAWN = 16
SCALARS = ("accuracy", "mse", "mae", "r2", "custom")


@dataclass
class Comparison:
    """Two versions on the same rows: agreement, metrics, disagreeing rows, latency."""

    name: str
    versions: tuple[str, str]
    rows: int
    agreement: float
    disagreeing: list[int]
    answers: dict[str, list[Any]]  # per version, its answer (class or values) per disagreeing row
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    batch_size: int = DEFAULT_BATCH
    images: list[Any] = field(default_factory=list, repr=False)  # disagreeing rows, as arrays

    def metric_difference(self) -> dict[str, float]:
        """Second version minus first, for each scalar metric both have."""
        a, b = (self.metrics.get(v, {}) for v in self.versions)
        return {k: b[k] - a[k] for k in SCALARS if k in a and k in b}

    def table(self) -> tuple[list[str], list[list[Any]]]:
        first, second = self.versions
        rows: list[list[Any]] = [
            ["agreement", f"{100 * self.agreement:.2f}%", "", ""],
            ["disagreeing rows", len(self.disagreeing), "", ""],
        ]
        diff = self.metric_difference()
        for key in SCALARS:
            if key in diff:
                a, b = self.metrics[first][key], self.metrics[second][key]
                rows.append([key, f"{a:.4g}", f"{b:.4g}", f"{diff[key]:+.4g}"])
        for q in ("p50", "p99"):
            lat = [self.latency_ms[v][q] for v in self.versions]
            rows.append([f"latency {q} ms", f"{lat[0]:.2f}", f"{lat[1]:.2f}", ""])
        return ["", first, second, "difference"], rows

    @property
    def title(self) -> str:
        first, second = self.versions
        return f"{self.name}: {first} vs {second} on {self.rows} rows ({self.batch_size}/request)"

    def __repr__(self) -> str:
        shown = ", ".join(map(str, self.disagreeing[:20]))
        more = " …" if len(self.disagreeing) > 20 else ""
        return f"{self.title}\n{text_table(*self.table())}\ndisagreeing rows: {shown}{more}"

    def _repr_html_(self) -> str:
        out = [html_table(*self.table(), self.title)]
        first, second = self.versions
        listed = [
            [row, a, b]
            for row, a, b in zip(
                self.disagreeing, self.answers[first], self.answers[second], strict=True
            )
        ]
        if listed:
            out.append(html_table(["row", first, second], listed[:50], "Disagreeing rows"))
        png = self.images_png()
        if png is not None:
            data = base64.b64encode(png).decode()
            out.append(f'<img alt="{esc("disagreeing rows")}" src="data:image/png;base64,{data}"/>')
        return "".join(out)

    def images_png(self) -> bytes | None:
        """The first disagreeing rows drawn as images, each titled with both answers."""
        if not self.images:
            return None
        from matplotlib.figure import Figure

        first, second = self.versions
        n = len(self.images)
        cols = min(n, 8)
        fig = Figure(figsize=(1.3 * cols, 1.5 * ((n + cols - 1) // cols)), dpi=80)
        for i, image in enumerate(self.images):
            ax = fig.add_subplot((n + cols - 1) // cols, cols, i + 1)
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
            a, b = self.answers[first][i], self.answers[second][i]
            ax.set_title(f"#{self.disagreeing[i]}: {a} / {b}", fontsize=7)
            ax.axis("off")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()


def as_image(row: np.ndarray) -> np.ndarray | None:
    """A row that is an image (H×W, 1×H×W or 3×H×W; or a flat square such as digits' 64)
    as an array matplotlib draws; None for rows that are not images."""
    row = np.asarray(row, dtype=np.float64)
    if row.ndim == 3 and row.shape[0] in (1, 3):
        row = row[0] if row.shape[0] == 1 else np.moveaxis(row, 0, -1)
    elif row.ndim == 1 and row.size >= 16 and int(np.sqrt(row.size)) ** 2 == row.size:
        side = int(np.sqrt(row.size))
        row = row.reshape(side, side)
    if row.ndim == 2 or (row.ndim == 3 and row.shape[-1] == 3):
        low, high = float(row.min()), float(row.max())
        return (row - low) / (high - low) if high > low else row * 0
    return None


def compare(
    name: str,
    first: str,
    second: str,
    x_test: Any,
    y_test: Any = None,
    *,
    handler: str | None = None,
    handler_config: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    metric: MetricFn | None = None,
    batch_size: int = DEFAULT_BATCH,
    tolerance: float = DEFAULT_TOLERANCE,
    progress: str | None = None,
    c: Client | None = None,
) -> Comparison:
    """Send ``x_test`` to versions ``first`` and ``second`` of ``name`` and compare them.

    ``handler="image_classifier"`` (with the deploy's ``handler_config`` and labels) sends
    each row as the image that handler receives, as the deploy's evaluation does."""
    rows = held_out_rows(x_test, None, handler, handler_config, labels)
    y = labels_for(rows, y_test)
    outputs: dict[str, np.ndarray] = {}
    latency: dict[str, dict[str, float]] = {}
    with engine_client(c) as c:
        for version in (first, second):
            seconds: list[float] = []
            outputs[version] = served_outputs(
                c, name, version, rows, batch_size, progress, latencies=seconds
            )
            ms = np.asarray(seconds) * 1000
            latency[version] = {
                "p50": float(np.percentile(ms, 50)),
                "p99": float(np.percentile(ms, 99)),
            }
    a, b = outputs[first], outputs[second]
    if isinstance(rows, ImageRows) and len(a) == len(b):  # top-k answers: pad to all classes
        width = max(a.shape[1], b.shape[1])
        a, b = (np.pad(o, ((0, 0), (0, width - o.shape[1]))) for o in (a, b))
        outputs = {first: a, second: b}
    if a.shape != b.shape:
        raise ValueError(f"versions {first} and {second} answer in shapes {a.shape} and {b.shape}")
    classifier = is_classifier(a, y)
    same = agreement(a, b, classifier, tolerance)
    disagreeing = [int(i) for i in np.flatnonzero(~same)]
    classes = classes_of(a, y) if classifier else []
    answers = {v: _answers(outputs[v], disagreeing, classifier) for v in (first, second)}
    images = []
    for i in disagreeing[:MAX_DRAWN]:
        shown = rows.inputs[i] if isinstance(rows, ImageRows) else rows[i]
        image = as_image(shown.numpy())
        if image is None:
            break
        images.append(image)
    return Comparison(
        name=name,
        versions=(first, second),
        rows=len(rows),
        agreement=float(np.mean(same)) if len(same) else 1.0,
        disagreeing=disagreeing,
        answers=answers,
        metrics={
            v: metrics_of(outputs[v], y, classifier, classes, metric) for v in (first, second)
        },
        latency_ms=latency,
        batch_size=batch_size,
        images=images,
    )


def _answers(outputs: np.ndarray, rows: list[int], classifier: bool) -> list[Any]:
    picked = predictions(outputs[rows], classifier) if rows else np.zeros((0,))
    if classifier:
        return [int(p) for p in picked]
    return [[round(float(v), 4) for v in p] for p in picked]
