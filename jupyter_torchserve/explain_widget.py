"""An explanation a person can turn toward another class: the top-k classes in a dropdown.

Why a wrapper and not more of explain_view: the drawing there is pure (an answer in, a PNG
and HTML out), while picking a target means asking the engine again, which only the caller
(``api.explain``) knows how to do; it passes that as ``toward(target)``. The display follows
widgets.py's rule: one output whose mime bundle carries the widget view (a live front end
draws the dropdown and redraws on a pick) *and* the PNG, HTML and text of the explanation
shown, which is all nbconvert, nbclient and GitHub keep.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from .explain_view import Explanation
from .widgets import WIDGET_MIME, output_mode

Toward = Callable[[int], Explanation]
"""Ask the engine again for the same input, explained toward this class."""


class ExplanationPicker:
    """The explanation shown now (``current``) and a dropdown of the top-k classes.

    Everything an :class:`~jupyter_torchserve.explain_view.Explanation` has is read through
    to ``current``: ``.attributions`` (a tensor), ``.raw`` (the answer as received),
    ``.info`` (the ``x-explanation`` facts), ``.target``, ``.delta``, ``.figure()``...
    """

    def __init__(self, first: Explanation, toward: Toward, mode: str | None = None) -> None:
        self.current = first
        self.history = [first]
        self._toward = toward
        self._mode = mode
        self._widget: Any = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "current":
            raise AttributeError(name)
        return getattr(self.current, name)

    # -- choosing a target ----------------------------------------------------------------
    def choices(self) -> list[tuple[str, int]]:
        """(caption, class index) of the top-k classes the answer named, the explained one
        first among equals; just the explained class when the handler sent no top-k."""
        info = self.history[0].info
        rows = info.get("topk") if isinstance(info.get("topk"), list) else []
        out = []
        for row in rows:
            if isinstance(row, list) and len(row) >= 2 and isinstance(row[0], int):
                p = f" (p = {row[2]:.3g})" if len(row) > 2 and isinstance(row[2], float) else ""
                label = str(row[1])
                caption = label if label == str(row[0]) else f"{label} (class {row[0]})"
                out.append((caption + p, row[0]))
        target = self.current.target
        if isinstance(target, int) and target not in [index for _, index in out]:
            out.insert(0, (str(target), target))
        return out

    def retarget(self, target: int) -> Explanation:
        """Explain the same input toward ``target`` (one more call to the engine) and show it."""
        if target != self.current.target:
            self.current = self._toward(target)
            self.history.append(self.current)
        self._redraw()
        return self.current

    # -- the widget -----------------------------------------------------------------------
    def widget(self) -> Any:
        """The ipywidgets view: dropdown, drawing and facts (made once)."""
        if self._widget is None:
            import ipywidgets as w

            self._picker = w.Dropdown(
                options=self.choices(),
                value=self.current.target if isinstance(self.current.target, int) else None,
                description="explain toward",
                style={"description_width": "initial"},
            )
            self._image = w.Image(format="png")
            self._facts = w.HTML()
            self._status = w.HTML()
            self._picker.observe(self._on_pick, names="value")
            self._widget = w.VBox([self._picker, self._image, self._facts, self._status])
            self._redraw()
        return self._widget

    def _on_pick(self, change: dict[str, Any]) -> None:
        if change.get("new") is None:
            return
        self._status.value = f"<i>explaining toward class {change['new']}…</i>"
        try:
            self.retarget(int(change["new"]))
        except Exception as exc:  # noqa: BLE001 - shown where the user looks, the view stays
            self._status.value = f"<span style='color:#b91c1c'>{type(exc).__name__}: {exc}</span>"
        else:
            self._status.value = ""

    def _redraw(self) -> None:
        if self._widget is None:
            return
        self._image.value = self.current._repr_png_()
        self._facts.value = self.current._facts_html()

    # -- Jupyter's display hooks ------------------------------------------------------------
    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        shown = self.current
        bundle: dict[str, Any] = {
            "text/plain": repr(shown),
            "image/png": base64.b64encode(shown._repr_png_()).decode("ascii"),
            "text/html": shown._repr_html_(),
        }
        if (self._mode or output_mode()) == "widget":
            widget = self.widget()
            bundle[WIDGET_MIME] = {
                "version_major": 2,
                "version_minor": 0,
                "model_id": widget.model_id,
            }
        return bundle

    def __repr__(self) -> str:
        return repr(self.current)
