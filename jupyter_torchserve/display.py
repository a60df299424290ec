"""Rich views of engine state: HTML tables in notebooks, aligned plain text everywhere else.

Why plain objects with ``_repr_html_`` and ``__repr__`` rather than printing: the same value
renders as a table in JupyterLab, as text in terminal IPython and in nbconvert output, and
scripts can still read its fields. Nothing here talks to the engine; callers pass the JSON the
client returned, so these classes stay trivially testable.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import prometheus

#: Said wherever a notebook user finds no engine: the status and every verb's error.
HOW_TO_START = (
    "Start one with `%torchserve start` in a notebook, `jupyter-torchserve start` in a "
    "terminal, or `jupyter_torchserve.api.start()` — `%torchserve deploy` starts one too."
)

_TABLE_STYLE = (
    "border-collapse:collapse;font-family:var(--jp-code-font-family,monospace);"
    "font-size:12px;margin:4px 0"
)
_CELL = "padding:2px 8px;border:1px solid var(--jp-border-color2,#ddd);text-align:left"


def esc(value: Any) -> str:
    """HTML-escape anything; None shows as an empty cell."""
    return "" if value is None else html.escape(str(value))


def html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> str:
    """A small styled HTML table (cells escaped)."""
    head = "".join(f'<th style="{_CELL}">{esc(h)}</th>' for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{esc(c)}</td>' for c in row) + "</tr>"
        for row in rows
    )
    cap = f'<caption style="text-align:left;font-weight:bold">{esc(caption)}</caption>'
    return f'<table style="{_TABLE_STYLE}">{cap if caption else ""}<tr>{head}</tr>{body}</table>'


def text_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns padded to their widest cell: readable in a terminal and in nbconvert output."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def human_bytes(n: Any) -> str:
    """1234567 -> '1.2 MB'; non-numbers pass through (TorchServe sends 'N/A' for GPU use)."""
    try:
        value = float(n)
    except (TypeError, ValueError):
        return "" if n is None else str(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(n)  # pragma: no cover


class _Rich:
    """Base: subclasses give ``headers``/``rows`` (or override both reprs)."""

    title = ""

    def table(self) -> tuple[list[str], list[list[Any]]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _repr_html_(self) -> str:
        headers, rows = self.table()
        if not rows:
            return f"<p><b>{esc(self.title)}</b>: none</p>"
        return html_table(headers, rows, self.title)

    def __repr__(self) -> str:
        headers, rows = self.table()
        if not rows:
            return f"{self.title}: none"
        return (self.title + "\n" if self.title else "") + text_table(headers, rows)


@dataclass(repr=False)
class ModelList(_Rich):
    """``%torchserve list``: one row per model version (default version marked)."""

    models: list[dict[str, Any]]
    descriptions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    title: str = "Models"

    def table(self) -> tuple[list[str], list[list[Any]]]:
        if not self.descriptions:
            return ["model", "url"], [[m.get("modelName"), m.get("modelUrl")] for m in self.models]
        rows: list[list[Any]] = []
        for m in self.models:
            name = m.get("modelName")
            for d in sorted(self.descriptions.get(name, []), key=version_key) or [m]:
                rows.append(
                    [
                        name,
                        d.get("modelVersion", ""),
                        "yes" if _is_default(d, m) else "",
                        _workers_summary(d),
                        d.get("batchSize", ""),
                        d.get("modelUrl", m.get("modelUrl")),
                    ]
                )
        return ["model", "version", "default", "workers", "batch", "url"], rows

    def __iter__(self):  # scripts iterate the models
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)


def version_key(desc: dict[str, Any]) -> tuple[Any, ...]:
    """Sort '1.0' < '2.0' < '10.0' (numbers compared as numbers, the rest as text)."""
    parts = re.split(r"[.\-_]", str(desc.get("modelVersion", "")))
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def _is_default(desc: dict[str, Any], listed: dict[str, Any]) -> bool:
    if "isDefault" in desc:
        return bool(desc["isDefault"])
    if "defaultVersion" in desc:
        return bool(desc["defaultVersion"])
    return desc.get("modelUrl") == listed.get("modelUrl")


def _workers_summary(desc: dict[str, Any]) -> str:
    workers = desc.get("workers") or []
    ready = sum(1 for w in workers if w.get("status") == "READY")
    lo, hi = desc.get("minWorkers"), desc.get("maxWorkers")
    bounds = f" (min {lo}, max {hi})" if lo is not None else ""
    return f"{ready}/{len(workers)} ready{bounds}"


def _traffic_summary(traffic: dict[str, Any] | None) -> str:
    """A version's part of the default route while a canary runs: role, share asked, seen."""
    if not traffic:
        return ""
    seen = traffic.get("observedPercent")
    seen_text = "" if seen is None else f", got {seen:g}% ({traffic['requests']} requests)"
    return f"{traffic['role']}: {traffic['percent']:g}% asked{seen_text}"


@dataclass(repr=False)
class ModelDescription(_Rich):
    """``%torchserve describe NAME``: settings per version, then a worker table."""

    name: str
    versions: list[dict[str, Any]]
    #: what to show after the tables, each with its own repr and HTML (the stored
    #: evaluation reports `describe --customized` found); their data is left out of the
    #: handler metadata printed beside them
    reports: list[Any] = field(default_factory=list)

    @property
    def title(self) -> str:  # type: ignore[override]
        return f"Model {self.name}"

    def table(self) -> tuple[list[str], list[list[Any]]]:
        rows = []
        for d in sorted(self.versions, key=version_key):
            q = d.get("jobQueueStatus") or {}
            rows.append(
                [
                    d.get("modelVersion"),
                    _workers_summary(d),
                    d.get("batchSize"),
                    d.get("maxBatchDelay"),
                    q.get("pendingRequests", ""),
                    d.get("deviceType", ""),
                    d.get("modelUrl"),
                ]
            )
        head = ["version", "workers", "batch", "delay ms", "queued", "device", "url"]
        if any("traffic" in d for d in self.versions):  # a canary runs (engine/canary.py)
            for row, d in zip(rows, sorted(self.versions, key=version_key), strict=True):
                row.insert(1, _traffic_summary(d.get("traffic")))
            head.insert(1, "default route")
        return head, rows

    def worker_table(self) -> tuple[list[str], list[list[Any]]]:
        rows = []
        for d in self.versions:
            for w in d.get("workers") or []:
                rows.append(
                    [
                        d.get("modelVersion"),
                        w.get("id"),
                        w.get("status"),
                        w.get("pid"),
                        human_bytes(w.get("memoryUsage")),
                        "gpu" if w.get("gpu") else "cpu",
                        w.get("gpuUsage", ""),
                        w.get("startTime", ""),
                    ]
                )
        return ["version", "worker", "status", "pid", "memory", "device", "gpu use", "since"], rows

    def _extra(self) -> list[tuple[str, list[list[str]]]]:
        """Each version's handler metadata as key/value rows (TorchServe's ``describe_handle``
        answers anything JSON: a dict is a table, anything else one row)."""
        shown = {"evaluation"} if self.reports else set()
        out = []
        for d in self.versions:
            meta = d.get("customizedMetadata")
            if isinstance(meta, dict):
                meta = {k: v for k, v in meta.items() if k not in shown} or None
            if meta is None:
                continue
            items = meta.items() if isinstance(meta, dict) else [("", meta)]
            rows = [
                [str(k), v if isinstance(v, str) else json.dumps(v, default=str)] for k, v in items
            ]
            out.append((str(d.get("modelVersion")), rows))
        return out

    def _repr_html_(self) -> str:
        out = [super()._repr_html_()]
        wh, wr = self.worker_table()
        if wr:
            out.append(html_table(wh, wr, "Workers"))
        for version, rows in self._extra():
            out.append(html_table(["key", "value"], rows, f"Handler metadata ({version})"))
        out += [report._repr_html_() for report in self.reports]
        return "".join(out)

    def __repr__(self) -> str:
        out = [super().__repr__()]
        wh, wr = self.worker_table()
        if wr:
            out.append("Workers\n" + text_table(wh, wr))
        for version, rows in self._extra():
            out.append(f"Handler metadata ({version})\n" + text_table(["key", "value"], rows))
        out += [repr(report) for report in self.reports]
        return "\n\n".join(out)


@dataclass(repr=False)
class EngineStatus(_Rich):
    """``%torchserve status``: the engine (process, addresses, GPUs) and its models."""

    info: dict[str, Any] | None
    engine: dict[str, Any] = field(default_factory=dict)
    models: ModelList | None = None
    title: str = "Engine"

    def table(self) -> tuple[list[str], list[list[Any]]]:
        if self.info is None:
            return ["", ""], []
        keys = [
            ("pid", self.info.get("pid")),
            ("version", self.engine.get("version", self.info.get("version"))),
            ("inference", self.info.get("inference_address")),
            ("management", self.info.get("management_address")),
            ("metrics", self.info.get("metrics_address")),
            ("gRPC inference", self.info.get("grpc_inference_address")),
            ("gRPC management", self.info.get("grpc_management_address")),
            ("model store", self.info.get("model_store")),
            ("token file", self.info.get("key_file") or "(token auth off)"),
            ("logs", self.info.get("log_dir")),
        ]
        shown = {"gpus", "models", "version", "pid", "started", "model_store", "log_dir"}
        for k, v in self.engine.items():
            if k in shown or k.endswith("_address") or isinstance(v, (dict, list)):
                continue
            keys.append((k.replace("_", " "), v))
        return ["", ""], [[k, v] for k, v in keys if v is not None]

    def gpu_table(self) -> tuple[list[str], list[list[Any]]]:
        gpus = self.engine.get("gpus") or []
        rows = [
            [
                g.get("index", i),
                g.get("name", ""),
                human_bytes(g.get("memory_used")),
                human_bytes(g.get("memory_total")),
                g.get("utilization", ""),
            ]
            for i, g in enumerate(gpus)
            if isinstance(g, dict)
        ]
        return ["gpu", "name", "memory used", "memory total", "utilization %"], rows

    def _not_running(self) -> str:
        return f"No jupyter_torchserve engine is running. {HOW_TO_START}"

    def _repr_html_(self) -> str:
        if self.info is None:
            return f"<p>{esc(self._not_running())}</p>"
        headers, rows = self.table()
        out = [html_table(["engine", ""], rows, "Engine")]
        gh, gr = self.gpu_table()
        out.append(html_table(gh, gr, "GPUs") if gr else "<p>GPUs: none (CPU only)</p>")
        if self.models is not None:
            out.append(self.models._repr_html_())
        return "".join(out)

    def __repr__(self) -> str:
        if self.info is None:
            return self._not_running()
        headers, rows = self.table()
        width = max(len(k) for k, _ in rows)
        out = ["Engine\n" + "\n".join(f"  {k:<{width}} {v}" for k, v in rows)]
        gh, gr = self.gpu_table()
        out.append("GPUs\n" + text_table(gh, gr) if gr else "GPUs: none (CPU only)")
        if self.models is not None:
            out.append(repr(self.models))
        return "\n\n".join(out)


Sample = tuple[str, dict[str, str], float]


@dataclass(repr=False)
class Metrics(_Rich):
    """``%torchserve metrics``: the ts_* and worker samples as a table; raw text in ``.text``."""

    text: str
    model: str | None = None
    title: str = "Metrics"
    _samples: list[Sample] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # parsed once, here: a page that cannot be read fails where the metrics are fetched
        self._samples = prometheus.samples(self.text)

    def samples(self) -> list[Sample]:
        rows = self._samples
        if self.model:
            rows = [r for r in rows if r[1].get("model_name") in (None, self.model)]
        return rows

    def table(self) -> tuple[list[str], list[list[Any]]]:
        rows = []
        for name, labels, value in self.samples():
            if name.startswith(("python_", "process_")) or name.endswith(("_created", "_bucket")):
                continue
            lab = ", ".join(f"{k}={v}" for k, v in labels.items() if k != "hostname")
            rows.append([name, lab, f"{value:g}"])
        return ["metric", "labels", "value"], rows

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels match: handy in tests and scripts."""
        return sum(
            v
            for n, lab, v in self.samples()
            if n == name and all(lab.get(k) == x for k, x in labels.items())
        )


@dataclass(repr=False)
class Logs:
    """``%torchserve logs NAME``: the tail of a model's worker log, shown verbatim."""

    name: str
    text: str

    def _repr_html_(self) -> str:
        return (
            f"<details open><summary>Logs of {esc(self.name)}</summary>"
            f'<pre style="max-height:30em;overflow:auto">{esc(self.text)}</pre></details>'
        )

    def __repr__(self) -> str:
        return self.text


@dataclass(repr=False)
class Message:
    """A one-line outcome (``Model "mnist" unregistered``) that also keeps the engine's JSON."""

    text: str
    data: Any = None

    def _repr_html_(self) -> str:
        return f"<p>{esc(self.text)}</p>"

    def __repr__(self) -> str:
        return self.text
