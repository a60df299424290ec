"""What a load test shows: its levels as a table and a picture, and its live progress.

`BenchResult` renders as an HTML table with the picture (JupyterLab), as aligned text
(terminal, nbconvert), and stays plain data for scripts (`rows`, `to_dataframe()`).
`BenchProgress` follows a running test: a progress bar and a live chart of req/s and p99
in a widget, updated in place, or one text line per finished level where no widget can be
drawn (widgets.py says why the two modes exist). Charts are matplotlib's (Agg), never drawn
by hand.
"""

from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import dataclass, field
from typing import Any

from .display import html_table, text_table
from .widgets import output_mode

PERCENTILES = ("p50_ms", "p90_ms", "p99_ms")
#: The live chart is redrawn at most this often (each draw costs the kernel ~40 ms of CPU,
#: taken from the engine under test on a small machine).
LIVE_REDRAW_S = 1.0


#: A level's row: its own fields by name, and three figured from them (Level.row)
ROW = (
    "workers",
    "concurrency",
    "requests",
    "req_per_s",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "errors",
    "error_statuses",
    "batch_sizes",
    "mean_batch",
    "generator_cpu_cores",
    "server_cpu_cores",
    "engine_requests",
)


@dataclass
class Level:
    """One measured point: `workers` (None: as the model was) × `concurrency` connections."""

    workers: int | None
    concurrency: int
    requests: int  # answers the generator got, errors included
    rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    errors: int  # non-2xx answers plus requests that got none
    statuses: dict[str, int]
    failures: dict[str, int]
    seconds: float
    generator_cpu_cores: float
    server_cpu_cores: float | None
    engine_requests: int  # the engine's own ts_inference_requests_total, over the level
    batch_sizes: dict[int, int] = field(default_factory=dict)  # bucket bound -> batches

    @classmethod
    def from_run(
        cls, workers: int | None, c: int, run: dict[str, Any], seen: dict[str, Any]
    ) -> Level:
        cpu = seen.get("server_cpu_seconds")
        wall = run.get("wall_seconds") or 0.0
        return cls(
            workers=workers,
            concurrency=c,
            requests=int(run["answered"]),
            rps=float(run["rps"]),
            p50_ms=run.get("p50_ms"),
            p90_ms=run.get("p90_ms"),
            p99_ms=run.get("p99_ms"),
            mean_ms=run.get("mean_ms"),
            max_ms=run.get("max_ms"),
            errors=int(run["errors"]),
            statuses=dict(run.get("statuses") or {}),
            failures=dict(run.get("failures") or {}),
            seconds=float(run.get("seconds") or 0.0),
            generator_cpu_cores=float(run.get("cpu_cores") or 0.0),
            server_cpu_cores=round(cpu / wall, 3) if cpu is not None and wall else None,
            engine_requests=int(seen.get("engine_requests", 0)),
            batch_sizes=dict(seen.get("batch_sizes") or {}),
        )

    @property
    def mean_batch(self) -> float | None:
        """Mean requests per batch, from the histogram's buckets (exact while batches are of
        sizes 1, 2, 4, 8, ..., the bucket bounds; an upper bound otherwise)."""
        n = sum(self.batch_sizes.values())
        if not n:
            return None
        return sum(size * count for size, count in self.batch_sizes.items() if size > 0) / n

    def row(self) -> dict[str, Any]:
        """The level as the sidebar's and the notebook's tables read it (keys: ROW)."""
        figured = {
            "req_per_s": self.rps,
            "error_statuses": {k: v for k, v in self.statuses.items() if not k.startswith("2")}
            | self.failures,
            "mean_batch": self.mean_batch,
        }
        return {key: figured[key] if key in figured else getattr(self, key) for key in ROW}


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _batches(sizes: dict[int, int]) -> str:
    """`1×120 2×31` (size bounds of the histogram's buckets)."""
    return " ".join(f"≤{s}×{n}" if s not in (1,) else f"1×{n}" for s, n in sorted(sizes.items()))


@dataclass
class BenchResult:
    model: str
    version: str | None
    protocol: str
    levels: list[Level]
    slo_ms: float | None = None
    started: float = 0.0
    duration: float = 0.0
    requests: int | None = None

    # -- plain data ------------------------------------------------------------------------
    @property
    def rows(self) -> list[dict[str, Any]]:
        return [level.row() for level in self.levels]

    def to_dataframe(self) -> Any:
        """A pandas DataFrame of the rows; the rows themselves where pandas is not installed."""
        try:
            import pandas as pd
        except ImportError:
            return self.rows
        return pd.DataFrame(self.rows)

    @property
    def worker_counts(self) -> list[int | None]:
        return sorted({lv.workers for lv in self.levels}, key=lambda w: -1 if w is None else w)

    @property
    def top_concurrency(self) -> int:
        return max(lv.concurrency for lv in self.levels)

    def recommended_workers(self) -> tuple[int | None, str]:
        """The fewest workers whose p99 at the highest concurrency tested is within
        `slo_ms`, and the sentence saying so; (None, why) when none is or no target was set."""
        if self.slo_ms is None:
            return None, "no latency target (slo_ms) given"
        c = self.top_concurrency
        for w in self.worker_counts:
            level = next(
                (lv for lv in self.levels if lv.workers == w and lv.concurrency == c), None
            )
            if (
                level
                and level.p99_ms is not None
                and level.p99_ms <= self.slo_ms
                and not level.errors
            ):
                who = "as it is" if w is None else f"{w} worker{'s' if w != 1 else ''}"
                return w, (
                    f"{who}: the fewest whose p99 at {c} connections "
                    f"({_ms(level.p99_ms)} ms) is within {self.slo_ms:g} ms, without errors"
                )
        return (
            None,
            f"no worker count tested keeps p99 at {c} connections within {self.slo_ms:g} ms",
        )

    # -- table -----------------------------------------------------------------------------
    HEADERS = [
        "workers",
        "conn",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "errors",
        "batches",
        "gen CPU",
        "server CPU",
        "answers",
        "engine count",
    ]

    def table(self) -> tuple[list[str], list[list[Any]]]:
        rows = []
        for lv in self.levels:
            rows.append(
                [
                    "–" if lv.workers is None else lv.workers,
                    lv.concurrency,
                    f"{lv.rps:,.0f}",
                    _ms(lv.p50_ms),
                    _ms(lv.p90_ms),
                    _ms(lv.p99_ms),
                    lv.errors if not lv.errors else f"{lv.errors} ({_error_kinds(lv)})",
                    _batches(lv.batch_sizes),
                    f"{lv.generator_cpu_cores:.2f}",
                    "–" if lv.server_cpu_cores is None else f"{lv.server_cpu_cores:.2f}",
                    lv.requests,
                    lv.engine_requests,
                ]
            )
        return self.HEADERS, rows

    def title(self) -> str:
        what = f"{self.model}" + (f" {self.version}" if self.version else "")
        per = f"{self.requests} requests" if self.requests else f"{self.duration:g} s"
        return f"Load test of {what} over {self.protocol}, {per} per level"

    def notes(self) -> list[str]:
        out = [
            "CPU in cores (1.00 = one core busy) over each level: the generator's own process, "
            "and the engine's process tree (engine, forkserver, workers)."
        ]
        gen_bound = [lv for lv in self.levels if lv.generator_cpu_cores >= 0.9]
        if gen_bound:
            out.append(
                "The generator used ≥0.9 cores at "
                + ", ".join(f"{lv.concurrency} connections" for lv in gen_bound)
                + ": there the generator, not the server, may have been the limit."
            )
        if self.slo_ms is not None:
            out.append(self.recommended_workers()[1])
        return out

    # -- picture ---------------------------------------------------------------------------
    def figure(self) -> Any:
        """Latency percentiles and throughput against concurrency (one line per worker count);
        with several worker counts, also the scaling curve at each concurrency."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure

        counts = self.worker_counts
        scaling = len(counts) > 1
        fig = Figure(figsize=(12 if scaling else 9, 3.6), dpi=100, layout="constrained")
        axes = fig.subplots(1, 3 if scaling else 2)
        lat, thr = axes[0], axes[1]
        styles = {"p50_ms": "-", "p90_ms": "--", "p99_ms": ":"}
        for i, w in enumerate(counts):
            lv = sorted((x for x in self.levels if x.workers == w), key=lambda x: x.concurrency)
            c = [x.concurrency for x in lv]
            colour = f"C{i}"
            who = "" if w is None else f"{w}w "
            for p, style in styles.items():
                ys = [getattr(x, p) for x in lv]
                lat.plot(c, ys, style, marker="o", color=colour, label=f"{who}{p[:3]}")
            thr.plot(c, [x.rps for x in lv], "-", marker="o", color=colour, label=f"{who}req/s")
        for ax in (lat, thr):
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted({lv.concurrency for lv in self.levels}))
            ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.set_xlabel("concurrent connections")
            ax.grid(True, alpha=0.3)
        lat.set_ylabel("latency (ms)")
        lat.set_title("Latency percentiles")
        if self.slo_ms is not None:
            lat.axhline(self.slo_ms, color="red", linewidth=0.8, label=f"SLO {self.slo_ms:g} ms")
        lat.legend(fontsize=7, ncol=max(1, len(counts)))
        thr.set_ylabel("throughput (req/s)")
        thr.set_ylim(bottom=0)
        thr.set_title("Throughput")
        thr.legend(fontsize=7)
        if scaling:
            sc = axes[2]
            ws = [w for w in counts if w is not None]
            for j, c in enumerate(sorted({lv.concurrency for lv in self.levels})):
                pts = [
                    next(
                        (lv.rps for lv in self.levels if lv.workers == w and lv.concurrency == c),
                        None,
                    )
                    for w in ws
                ]
                sc.plot(ws, pts, "-", marker="s", color=f"C{j + len(counts)}", label=f"{c} conn")
            sc.set_xticks(ws)
            sc.set_xlabel("workers")
            sc.set_ylabel("throughput (req/s)")
            sc.set_ylim(bottom=0)
            sc.set_title("Scaling curve")
            best, _why = self.recommended_workers()
            if best is not None:
                sc.axvline(best, color="red", linewidth=0.8, label=f"chosen: {best}")
            sc.legend(fontsize=7)
            sc.grid(True, alpha=0.3)
        fig.suptitle(self.title(), fontsize=10)
        return fig

    def png(self) -> bytes:
        buf = io.BytesIO()
        self.figure().savefig(buf, format="png")
        return buf.getvalue()

    def save(self, path: str) -> str:
        """Write the picture (png, svg or pdf, by the file's suffix)."""
        self.figure().savefig(path)
        return path

    # -- reprs -----------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        headers, rows = self.table()
        img = base64.b64encode(self.png()).decode()
        notes = "".join(
            f"<p style='font-size:12px;margin:2px 0'>{html.escape(n)}</p>" for n in self.notes()
        )
        return (
            html_table(headers, rows, self.title())
            + notes
            + f'<img alt="{html.escape(self.title())}" src="data:image/png;base64,{img}"/>'
        )

    def __repr__(self) -> str:
        headers, rows = self.table()
        return "\n".join([self.title(), text_table(headers, rows), *self.notes()])


def _error_kinds(lv: Level) -> str:
    kinds = {k: v for k, v in lv.statuses.items() if not k.startswith("2")} | lv.failures
    return ", ".join(f"{k}×{v}" for k, v in sorted(kinds.items()))


class BenchProgress:
    """The live view of a running test: feed it `bench.run`'s progress messages."""

    def __init__(self, title: str, mode: str | None = None) -> None:
        self.title = title
        self.mode = mode or output_mode()
        self.points: list[tuple[float, float, float | None, str]] = []  # t, rps, p99, level
        self.lines: list[str] = []  # one per finished level (what text mode printed)
        self._t0 = time.monotonic()
        self._drawn = 0.0
        self._level = ""
        self._of = 1
        self._index = 0
        if self.mode == "widget":
            import ipywidgets as w
            from IPython.display import display

            self._label = w.HTML(value=f"<b>{html.escape(title)}</b>")
            self._bar = w.FloatProgress(value=0, min=0, max=1, bar_style="info")
            self._chart = w.Image(format="png", layout=w.Layout(max_width="720px"))
            display(w.VBox([self._label, self._bar, self._chart]))
        elif self.mode == "text":
            print(title, flush=True)

    def __call__(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "level_done":
            self.level_done(msg["level"])
            return
        self._of = msg.get("of", self._of)
        self._index = msg.get("index", self._index)
        w, c = msg.get("workers"), msg.get("c")
        self._level = (f"{w} workers, " if w is not None else "") + f"{c} connections"
        if kind == "progress":
            t = time.monotonic() - self._t0
            self.points.append((t, float(msg.get("rps") or 0.0), msg.get("p99_ms"), self._level))
        if self.mode == "widget":
            self._update(msg)

    def level_done(self, level: Level) -> None:
        line = (
            f"  {self._level}: {level.rps:,.0f} req/s, p50 {_ms(level.p50_ms)} ms, "
            f"p99 {_ms(level.p99_ms)} ms, {level.errors} errors"
        )
        self.lines.append(line)
        if self.mode == "text":
            print(line, flush=True)
        elif self.mode == "widget":
            self._bar.value = (self._index + 1) / max(1, self._of)

    def finish(self, ok: bool = True) -> None:
        if self.mode == "widget":
            self._bar.value = 1.0 if ok else self._bar.value
            self._bar.bar_style = "success" if ok else "danger"
            self._label.value = f"<b>{html.escape(self.title)}</b> — {'done' if ok else 'stopped'}"
            self._draw()

    # -- widget ----------------------------------------------------------------------------
    def _update(self, msg: dict[str, Any]) -> None:
        frac = 0.0
        plan = msg.get("plan_duration")
        if msg.get("type") == "progress" and plan:
            frac = min(1.0, float(msg.get("elapsed", 0.0)) / plan)
        self._bar.value = (self._index + frac) / max(1, self._of)
        rps = msg.get("rps")
        now = f" · {rps:,.0f} req/s" if isinstance(rps, (int, float)) else ""
        self._label.value = (
            f"<b>{html.escape(self.title)}</b> — level {self._index + 1}/{self._of}: "
            f"{html.escape(self._level)}{now}"
        )
        if time.monotonic() - self._drawn >= LIVE_REDRAW_S:
            self._draw()

    def _draw(self) -> None:
        if not self.points:
            return
        self._chart.value = live_chart_png(self.points, self.title)
        self._drawn = time.monotonic()


def live_chart_png(points: list[tuple[float, float, float | None, str]], title: str) -> bytes:
    """Throughput (left axis) and p99 (right axis) over the test's elapsed time."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 2.4), dpi=90, layout="constrained")
    ax = fig.subplots()
    t = [p[0] for p in points]
    ax.plot(t, [p[1] for p in points], color="C0", label="req/s")
    ax.set_xlabel("elapsed (s)")
    ax.set_ylabel("throughput (req/s)", color="C0")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    ax2.plot(t, [p[2] for p in points], color="C3", linestyle=":", label="p99 ms")
    ax2.set_ylabel("p99 latency (ms)", color="C3")
    ax2.set_ylim(bottom=0)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=7, loc="upper left")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
