"""Progress while deploying, and a live status view, that degrade to plain text.

Why the care: a widget is only drawn by a front end with the widget manager (JupyterLab,
Notebook 7, VS Code). Terminal IPython has no front end at all, and nbconvert/nbclient keep
only the ``text/plain`` part of an output. So progress is shown as one display output whose
mime bundle carries *both* the widget view and an up-to-date text rendering, replaced in place
with ``update_display``: a live front end draws the widget, a saved notebook reads the text.
Outside a kernel, steps are printed line by line as they finish.

The live status view refreshes from a daemon thread, so the kernel keeps executing cells
while it updates; it stops by itself after ``duration`` seconds or on its Stop button.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def output_mode() -> str:
    """'widget' inside a Jupyter kernel, 'text' elsewhere; ``JUPYTER_TORCHSERVE_PROGRESS``
    (widget|text|none) overrides it, e.g. for tests or quiet scripts."""
    forced = os.environ.get("JUPYTER_TORCHSERVE_PROGRESS", "").strip().lower()
    if forced in ("widget", "text", "none"):
        return forced
    try:
        from IPython import get_ipython

        ip = get_ipython()
    except ImportError:  # pragma: no cover - IPython is a dependency
        return "text"
    if ip is not None and getattr(ip, "kernel", None) is not None:
        try:
            import ipywidgets  # noqa: F401
        except ImportError:  # pragma: no cover
            return "text"
        return "widget"
    return "text"


class Progress:
    """Named steps with timings: ``with progress.step("archive"): ...``.

    ``mode`` is 'widget', 'text' or 'none' (default: :func:`output_mode`). The text of every
    finished step is kept in ``lines`` so callers and tests can read what was shown.
    """

    def __init__(self, title: str, steps: list[str], mode: str | None = None) -> None:
        self.title = title
        self.steps = list(steps)
        self.mode = mode or output_mode()
        self.lines: list[str] = []
        self.current: str | None = None
        self.failed = False
        self._started = 0.0
        self._widget: Any = None
        self._display_id = f"jts-progress-{uuid.uuid4().hex}"
        self._shown = False
        if self.mode == "widget":
            self._make_widget()

    # -- rendering -----------------------------------------------------------------------
    def _make_widget(self) -> None:
        import ipywidgets as w

        self._bar = w.IntProgress(value=0, min=0, max=max(1, len(self.steps)), bar_style="info")
        self._label = w.HTML(value=f"<b>{self.title}</b>")
        self._log = w.HTML(value="")
        self._widget = w.VBox([self._label, self._bar, self._log])

    def text(self) -> str:
        """The plain rendering: title, finished steps, and the step running now."""
        out = [self.title, *("  " + line for line in self.lines)]
        if self.current:
            out.append(f"  … {self.current}")
        return "\n".join(out)

    def _bundle(self) -> dict[str, Any]:
        bundle = self._widget._repr_mimebundle_() or {}
        if isinstance(bundle, tuple):  # (data, metadata)
            bundle = bundle[0]
        bundle = dict(bundle)
        bundle["text/plain"] = self.text()
        return bundle

    def _refresh(self) -> None:
        if self.mode != "widget":
            return
        from IPython.display import display, update_display

        done = len(self.lines)
        self._bar.value = min(done, self._bar.max)
        if self.failed:
            self._bar.bar_style = "danger"
        elif done >= len(self.steps):
            self._bar.bar_style = "success"
        import html

        now = f"<i>{html.escape(self.current)}…</i>" if self.current else ""
        self._label.value = f"<b>{html.escape(self.title)}</b> {now}"
        self._log.value = "<br>".join(html.escape(line) for line in self.lines)
        if not self._shown:
            display(self._bundle(), raw=True, display_id=self._display_id)
            self._shown = True
        else:
            update_display(self._bundle(), raw=True, display_id=self._display_id)

    def _emit(self, line: str) -> None:
        self.lines.append(line)
        if self.mode == "text":
            print(f"  {line}", flush=True)

    # -- API -------------------------------------------------------------------------------
    def start(self) -> None:
        """Show the title (text mode) or the widget."""
        self._started = time.monotonic()
        if self.mode == "text":
            print(self.title, flush=True)
        self._refresh()

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        """Time one step; the yielded dict's 'note' is appended to its line (e.g. 'reused')."""
        self.current = name
        self._refresh()
        info: dict[str, Any] = {"note": ""}
        t0 = time.monotonic()
        try:
            yield info
        except BaseException as exc:
            self.failed = True
            self.current = None
            self._emit(f"✗ {name} failed after {time.monotonic() - t0:.1f} s")
            self._refresh()
            raise exc
        note = f" — {info['note']}" if info.get("note") else ""
        self.current = None
        self._emit(f"✓ {name} ({time.monotonic() - t0:.1f} s){note}")
        self._refresh()

    def note(self, line: str) -> None:
        """A line that is not a step (a warning, a chosen format)."""
        self._emit(line)
        self._refresh()

    def finish(self, line: str | None = None) -> None:
        if line:
            self._emit(line)
        self._refresh()


class LiveStatus:
    """A status view refreshed every ``interval`` seconds from a daemon thread.

    ``render`` returns an object with ``_repr_html_`` (e.g. :class:`display.EngineStatus`).
    The kernel stays free: the thread only calls ``render`` and sets the widget's value.
    """

    def __init__(
        self,
        render: Callable[[], Any],
        interval: float = 2.0,
        duration: float = 600.0,
        mode: str | None = None,
    ) -> None:
        self.render = render
        self.interval = max(0.2, float(interval))
        self.duration = duration
        self.mode = mode or output_mode()
        self.refreshes = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._widget: Any = None

    def _html(self) -> str:
        try:
            view = self.render()
            self.error = None
            html = view._repr_html_() if hasattr(view, "_repr_html_") else f"<pre>{view}</pre>"
        except Exception as exc:  # keep refreshing: the engine may be restarting
            self.error = str(exc)
            html = f"<p style='color:#b00'>{exc}</p>"
        self.refreshes += 1
        stamp = time.strftime("%H:%M:%S")
        return f"{html}<p style='font-size:11px;color:#888'>updated {stamp}</p>"

    def show(self) -> LiveStatus:
        """Display and start refreshing (widget mode), or print one snapshot (text mode)."""
        if self.mode != "widget":
            try:
                print(repr(self.render()))
            except Exception as exc:
                print(f"status unavailable: {exc}", file=sys.stderr)
            return self
        import ipywidgets as w
        from IPython.display import display

        self._view = w.HTML(value=self._html())
        self._button = w.Button(description="Stop", icon="stop", layout=w.Layout(width="80px"))
        self._button.on_click(lambda _b: self.stop())
        self._widget = w.VBox([self._view, self._button])
        display(self._widget)
        self._thread = threading.Thread(target=self._loop, name="torchserve-live", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        deadline = time.monotonic() + self.duration
        while not self._stop.wait(self.interval):
            if time.monotonic() > deadline:
                break
            self._view.value = self._html()
        self._button.disabled = True
        self._button.description = "Stopped"

    def stop(self) -> None:
        """Stop refreshing (the last view stays)."""
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _repr_html_(self) -> str:  # when the returned object itself is displayed
        return "" if self.mode == "widget" else self._html()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<LiveStatus {state}, every {self.interval:g} s, {self.refreshes} refreshes>"
