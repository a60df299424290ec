"""Explanations a person can read: attributions drawn next to the input they explain.

Why: an Integrated Gradients answer is a ``[1][28][28]`` nested list, which nobody reads in
a cell output. :func:`explanation` turns any answer our engine (or TorchServe, or KServe)
gives into an object that Jupyter shows as input | signed heatmap | overlay for images,
highlighted words for text and a bar per feature for other tensors: a PNG (drawn with
matplotlib's Agg canvas, so nbconvert, nbclient and GitHub show it) and an HTML view for
rich frontends. The numbers stay one attribute away: ``.attributions`` (a tensor) and
``.raw`` (the answer as received).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from typing import Any

import numpy as np
import torch

from .v2_dtypes import EXPLAIN_OUTPUT

#: The response header the built-in handlers put an explanation's facts in (target,
#: prediction, delta, top-k, method, ms); handlers/builtin/jts_base.py spells it too, since
#: archived handler files import nothing of ours.
EXPLANATION_HEADER = "x-explanation"

#: Diverging, white at 0: red pushes toward the target, blue away from it.
COLORMAP = "RdBu_r"


def explanation(
    raw: Any,
    *,
    input: Any = None,  # noqa: A002 - what the user passes is "the input"
    info: Any = None,
    latency: float | None = None,
) -> Explanation:
    """The readable form of one explanation answer.

    ``raw`` is the answer's body (bytes, text or parsed JSON) in any of the shapes served:
    TorchServe's ``/explanations`` (a nested list; text: ``{"words", "importances",
    "delta"}``), KServe v1 ``{"explanations": [...]}`` or v2 ``{"outputs": [{"name":
    "explain", ...}]}``; the first instance is drawn. ``input`` is what was explained (image
    bytes, a PIL image, an array or tensor), ``info`` the ``x-explanation`` response header
    (JSON text or dict: target, prediction, delta, ...), ``latency`` the round trip in s.
    """
    value = _parse(raw)
    facts = _parse(info) if info is not None else {}
    if not isinstance(facts, dict):
        raise ValueError(f"info must be the x-explanation header (a JSON object), not {facts!r}")
    answer = _first_instance(value)
    answer, facts = _first_row(answer, facts)
    if isinstance(answer, dict) and "importances" in answer:
        return TextExplanation(raw, value, answer, facts, latency)
    try:
        attributions = torch.as_tensor(np.asarray(answer, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not an explanation answer: {type(answer).__name__} ({exc})") from exc
    if attributions.dim() == 4 and attributions.shape[0] == 1:
        attributions = attributions[0]
    if attributions.dim() in (2, 3):
        return ImageExplanation(raw, attributions, facts, latency, input)
    return FeatureExplanation(raw, attributions, facts, latency)


def _parse(raw: Any) -> Any:
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = bytes(raw).decode("utf-8")
    if isinstance(raw, str):
        return json.loads(raw)
    return raw


#: Keys of the x-explanation header that hold one value per row when a request sent a batch.
ROW_FACTS = (
    "target",
    "prediction",
    "score",
    "delta",
    "label",
    "probability",
    "target_label",
    "target_probability",
    "topk",
)


def _first_row(answer: Any, facts: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A request of several rows (``[[...]]`` tensors) is answered one entry per row, with a
    list of targets in its header: the first row is drawn, with its own facts."""
    targets = facts.get("target")
    if not (isinstance(targets, list) and isinstance(answer, list)):
        return answer, facts
    if len(targets) != len(answer) or not targets:
        return answer, facts
    row = {k: v[0] if k in ROW_FACTS and isinstance(v, list) and v else v for k, v in facts.items()}
    return answer[0], row


def _first_instance(value: Any) -> Any:
    """TorchServe's answer as it is; KServe v1/v2 envelopes unwrapped to their first instance."""
    if isinstance(value, dict) and isinstance(value.get("explanations"), list):
        return value["explanations"][0]
    if isinstance(value, dict) and isinstance(value.get("outputs"), list):
        for output in value["outputs"]:
            if output.get("name") == EXPLAIN_OUTPUT:
                return np.asarray(output["data"], dtype=np.float64).reshape(output["shape"])
        raise ValueError(f"the KServe v2 answer has no output named {EXPLAIN_OUTPUT!r}")
    return value


class Explanation:
    """What every explanation carries: the numbers, the answer and the facts around it."""

    kind = "tensor"

    def __init__(
        self, raw: Any, attributions: torch.Tensor, info: dict[str, Any], latency: float | None
    ) -> None:
        self.raw = raw
        self.attributions = attributions
        self.info = info
        self.latency = latency
        self._png: bytes | None = None

    # -- the facts of the x-explanation header ---------------------------------------------------
    @property
    def target(self) -> Any:
        return self.info.get("target")

    @property
    def prediction(self) -> Any:
        return self.info.get("prediction")

    @property
    def delta(self) -> Any:
        return self.info.get("delta")

    def facts(self) -> list[tuple[str, str]]:
        """(name, value) lines shown under the drawing, in reading order."""
        info = self.info
        lines = []
        if "prediction" in info:
            text = _label(info.get("label"), info["prediction"])
            if info.get("probability") is not None:
                text += f" (p = {_number(info['probability'])})"
            lines.append(("predicted", text))
        if "target" in info:
            text = _label(info.get("target_label"), info["target"])
            if info.get("target_probability") is not None:
                text += f" (p = {_number(info['target_probability'])})"
            lines.append(("explained toward", text))
        if "delta" in info:
            lines.append(("convergence delta", _number(info["delta"])))
        if "method" in info:
            steps = f", {info['n_steps']} steps" if "n_steps" in info else ""
            baseline = f", baseline {info['baseline']}" if "baseline" in info else ""
            lines.append(("method", f"{info['method']}{steps}{baseline}"))
        timing = []
        if isinstance(info.get("ms"), (int, float)):
            timing.append(f"{info['ms']:.0f} ms in the handler")
        if self.latency is not None:
            timing.append(f"{self.latency * 1000:.0f} ms round trip")
        if timing:
            lines.append(("took", ", ".join(timing)))
        return lines

    def caption(self) -> str:
        return " · ".join(f"{name} {value}" for name, value in self.facts())

    # -- Jupyter's display hooks -----------------------------------------------------------------
    def figure(self) -> Any:
        """The drawing as a matplotlib Figure (Agg canvas; save it with ``savefig``)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=self.figure_size(), dpi=100)
        FigureCanvasAgg(figure)
        self.draw(figure)
        return figure

    def figure_size(self) -> tuple[float, float]:
        return (8.0, 3.2)

    def draw(self, figure: Any) -> None:
        values = self.attributions.reshape(-1).double().numpy()
        axes = figure.add_subplot(1, 1, 1)
        colors = _colors(values)
        axes.bar(range(len(values)), values, color=colors)
        axes.axhline(0, color="black", linewidth=0.8)
        axes.set_xlabel("input feature")
        axes.set_ylabel("attribution")
        axes.set_title(self.title(), fontsize=10)
        figure.tight_layout()

    def title(self) -> str:
        """Two lines over the drawing: what was explained, then how well and at what cost."""
        facts = dict(self.facts())
        lines = [
            ", ".join(f"{k} {facts[k]}" for k in keys if k in facts)
            for keys in (("predicted", "explained toward"), ("convergence delta", "took"))
        ]
        return "\n".join(line for line in lines if line)

    def _repr_png_(self) -> bytes:
        if self._png is None:
            buffer = io.BytesIO()
            self.figure().savefig(buffer, format="png")
            self._png = buffer.getvalue()
        return self._png

    def _repr_html_(self) -> str:
        image = base64.b64encode(self._repr_png_()).decode("ascii")
        return (
            f'<div class="jts-explanation jts-explanation-{self.kind}">'
            f'<img alt="explanation" src="data:image/png;base64,{image}"/>'
            f"{self._facts_html()}</div>"
        )

    def _facts_html(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(name)}</th>"
            f"<td style='text-align:left'>{html.escape(value)}</td></tr>"
            for name, value in self.facts()
        )
        return f"<table>{rows}</table>"

    def __repr__(self) -> str:
        shape = "x".join(str(s) for s in self.attributions.shape)
        return f"<{type(self).__name__} {shape}: {self.caption()}>"


class ImageExplanation(Explanation):
    """Input | signed heatmap (summed over channels) | the heatmap blended over the input."""

    kind = "image"

    def __init__(
        self,
        raw: Any,
        attributions: torch.Tensor,
        info: dict[str, Any],
        latency: float | None,
        input: Any = None,  # noqa: A002
    ) -> None:
        super().__init__(raw, attributions, info, latency)
        height, width = self.heatmap().shape
        self.image = None if input is None else image_array(input, (height, width))

    def heatmap(self) -> np.ndarray:
        """``[H, W]``: the attributions summed over channels, sign kept."""
        values = self.attributions.double().numpy()
        return values.sum(axis=0) if values.ndim == 3 else values

    def figure_size(self) -> tuple[float, float]:
        return (10.5, 4.0) if self.image is not None else (4.5, 4.0)

    def draw(self, figure: Any) -> None:
        heat = self.heatmap()
        bound = float(np.abs(heat).max()) or 1.0
        panels = 3 if self.image is not None else 1
        axes = figure.subplots(1, panels, squeeze=False)[0]
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        heat_ax = axes[1] if self.image is not None else axes[0]
        shown = heat_ax.imshow(heat, cmap=COLORMAP, vmin=-bound, vmax=bound)
        heat_ax.set_title("attribution (red +, blue −)", fontsize=10)
        figure.colorbar(shown, ax=heat_ax, fraction=0.046, pad=0.04)
        if self.image is not None:
            gray = self.image if self.image.ndim == 2 else self.image.mean(axis=2)
            axes[0].imshow(self.image, cmap="gray" if self.image.ndim == 2 else None)
            axes[0].set_title("input", fontsize=10)
            axes[2].imshow(gray, cmap="gray", vmin=0, vmax=1)
            axes[2].imshow(_overlay(heat, bound))
            axes[2].set_title("overlay", fontsize=10)
        figure.suptitle(self.title(), fontsize=11)
        figure.tight_layout()


class FeatureExplanation(Explanation):
    """One bar per input feature (any attribution that is not an image)."""

    kind = "tensor"


class TextExplanation(Explanation):
    """Each word on a background coloured by its importance."""

    kind = "text"

    def __init__(
        self,
        raw: Any,
        value: Any,
        answer: dict[str, Any],
        info: dict[str, Any],
        latency: float | None,
    ) -> None:
        super().__init__(
            raw, torch.as_tensor(answer["importances"], dtype=torch.float64), info, latency
        )
        self.words = [str(w) for w in answer.get("words") or []]
        if len(self.words) != len(self.attributions):
            raise ValueError(
                f"the answer has {len(self.words)} words but {len(self.attributions)} importances"
            )
        if self.info.get("delta") is None and answer.get("delta") is not None:
            self.info = {**self.info, "delta": answer["delta"]}

    #: characters per line of the PNG and the font that makes each one the same width
    line_chars = 72
    font = "DejaVu Sans Mono"

    def _lines(self) -> list[list[int]]:
        lines: list[list[int]] = [[]]
        used = 0
        for i, word in enumerate(self.words):
            if lines[-1] and used + len(word) + 1 > self.line_chars:
                lines.append([])
                used = 0
            lines[-1].append(i)
            used += len(word) + 1
        return lines

    def figure_size(self) -> tuple[float, float]:
        return (9.0, 1.2 + 0.42 * len(self._lines()))

    def draw(self, figure: Any) -> None:
        from matplotlib import colormaps

        values = self.attributions.numpy()
        bound = float(np.abs(values).max()) or 1.0
        cmap = colormaps[COLORMAP]
        width_in, height_in = figure.get_size_inches()
        char_w = 0.6 * 13 / 72 / width_in  # a monospace glyph is 0.6 em wide
        line_h = 0.42 / height_in
        left = 0.3 / width_in
        top = 1.0 - 0.9 / height_in
        for row, indices in enumerate(self._lines()):
            x = left
            for i in indices:
                colour = cmap(0.5 + 0.4 * float(values[i]) / bound)  # no darkest ends: legible
                figure.text(
                    x,
                    top - row * line_h,
                    self.words[i],
                    fontsize=13,
                    family=self.font,
                    va="baseline",
                    bbox={"facecolor": colour, "edgecolor": "none", "pad": 2.0},
                )
                x += char_w * (len(self.words[i]) + 1)
        figure.suptitle(self.title(), fontsize=11)

    def _repr_html_(self) -> str:
        values = self.attributions.numpy()
        bound = float(np.abs(values).max()) or 1.0
        spans = []
        for word, value in zip(self.words, values.tolist(), strict=True):
            alpha = min(1.0, abs(value) / bound)
            rgb = "220,38,38" if value >= 0 else "37,99,235"
            spans.append(
                f'<span title="{value:+.4f}" style="background:rgba({rgb},{alpha:.3f});'
                f'padding:0 2px;border-radius:3px">{html.escape(word)}</span>'
            )
        return (
            '<div class="jts-explanation jts-explanation-text">'
            f'<p style="line-height:1.9">{" ".join(spans)}</p>{self._facts_html()}</div>'
        )


def image_array(image: Any, size: tuple[int, int] | None = None) -> np.ndarray:
    """Image bytes, a PIL image, an array or a tensor -> float ``[H, W]`` or ``[H, W, 3]``
    in [0, 1], resized to ``size`` (the attributions' ``(H, W)``) when given."""
    from PIL import Image

    if isinstance(image, (bytes, bytearray, memoryview)):
        image = Image.open(io.BytesIO(bytes(image)))
    if isinstance(image, Image.Image):
        image = image.convert("L" if image.mode in ("L", "LA", "1", "I", "F") else "RGB")
        array = np.asarray(image, dtype=np.float64) / 255.0
    else:
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu().numpy()
        array = np.asarray(image, dtype=np.float64)
        if array.ndim == 4 and array.shape[0] == 1:
            array = array[0]
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = array.transpose(1, 2, 0)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim == 3 and array.shape[-1] == 4:
            array = array[..., :3]
        if array.ndim not in (2, 3):
            raise ValueError(f"an image must be [H, W], [H, W, C] or [C, H, W], not {array.shape}")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:  # normalised or 0..255: stretch to [0, 1] for display
            array = (array - low) / ((high - low) or 1.0)
    if size is not None and array.shape[:2] != tuple(size):
        mode = "L" if array.ndim == 2 else "RGB"
        pil = Image.fromarray(np.uint8(np.clip(array, 0, 1) * 255), mode=mode)
        pil = pil.resize((size[1], size[0]), Image.BILINEAR)
        array = np.asarray(pil, dtype=np.float64) / 255.0
    return array


def _overlay(heat: np.ndarray, bound: float) -> np.ndarray:
    """RGBA heatmap whose opacity grows with |attribution|, so the input shows where it is 0."""
    from matplotlib import colormaps

    scaled = np.clip(heat / bound, -1.0, 1.0)
    rgba = colormaps[COLORMAP](0.5 + 0.5 * scaled)
    rgba[..., 3] = 0.85 * np.abs(scaled)
    return rgba


def _colors(values: np.ndarray) -> list[Any]:
    from matplotlib import colormaps

    bound = float(np.abs(values).max()) or 1.0
    cmap = colormaps[COLORMAP]
    return [cmap(0.5 + 0.5 * float(v) / bound) for v in values]


def _label(label: Any, index: Any) -> str:
    if label is None or str(label) == str(index):
        return str(index)
    return f"{label} (class {index})"


def _number(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_number(v) for v in value) + "]"
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.3g}"
    return str(value)
