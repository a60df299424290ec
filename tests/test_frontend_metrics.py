"""TorchServe's frontend metric families on our page: the same names, types, HELP lines and
label names as a real TorchServe 0.12 page (tests/data/torchserve-0.12-metrics.txt, recorded
with `metrics_mode=prometheus`; tests/test_metrics_pages.py compares live pages). No process:
fast tier."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from jupyter_torchserve.engine.frontend_metrics import FrontendMetrics
from jupyter_torchserve.engine.gpu import GpuInfo
from jupyter_torchserve.engine.metrics import EngineMetrics

TORCHSERVE_PAGE = (Path(__file__).parent / "data" / "torchserve-0.12-metrics.txt").read_text()
# backend families (from the handler's worker) and the Java worker thread's: not ours
NOT_OURS = {"HandlerTime", "PredictionTime", "WorkerThreadTime", "WorkerLoadTime"}


def shape(page: str) -> dict[str, tuple[str, str, set[tuple[str, ...]]]]:
    """family -> (HELP, TYPE, the sorted label names of each of its samples)."""
    out: dict[str, tuple[str, str, set[tuple[str, ...]]]] = {}
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", page, re.M))
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", page, re.M):
        out[name] = (helps[name], kind, set())
    for name, labels in re.findall(r"^(\w+)\{([^}]*)\} \S+$", page, re.M):
        if name in out:
            out[name][2].add(tuple(sorted(re.findall(r'(\w+)="', labels))))
    return out


def test_our_page_has_torchserves_frontend_families_as_torchserve_writes_them():
    metrics = EngineMetrics(lambda: [])
    for api, code in (("inference", 200), ("management", 200), ("inference", 404)):
        metrics.response(api, code)
    metrics.response("inference", 503)
    metrics.frontend.answered(("probe", "default"), 0.075, 0.006)
    metrics.request_received(SimpleNamespace(name="probe", version="1.0"), None)  # type: ignore[arg-type]
    gpu = GpuInfo(0, "H200", "GPU-x", 2 * 1024**3, 8 * 1024**3, 40.0)
    ours = shape(metrics.exposition().decode() + metrics.frontend.exposition(gpus=[gpu]))
    theirs = shape(TORCHSERVE_PAGE)
    assert set(theirs) - set(ours) - NOT_OURS == set()
    for name, (help_, kind, labels) in ours.items():
        if name.startswith("jts_"):
            continue  # ours, beside theirs
        assert (help_, kind) == theirs[name][:2], name
        if theirs[name][2]:  # the recorded page had samples of it (no GPU, no 4XX there)
            assert labels == theirs[name][2], name
    assert ours["GPUUtilization"][2] == {("DeviceId", "Hostname", "Level")}
    page = metrics.exposition().decode()
    assert re.search(r'^Requests2XX\{Level="Host",Hostname="[^"]+",\} 2\.0$', page, re.M)
    assert re.search(r'^Requests4XX\{Level="Host",Hostname="[^"]+",\} 1\.0$', page, re.M)
    assert re.search(r'^Requests5XX\{Level="Host",Hostname="[^"]+",\} 1\.0$', page, re.M)
    assert "# TYPE ts_inference_latency_microseconds counter" in page
    assert re.search(
        r'^ts_queue_latency_microseconds\{model_name="probe".*,\} 6000\.0$', page, re.M
    )


def test_the_metrics_port_is_not_counted_and_filters_keep_only_the_named_families():
    m = FrontendMetrics("h")
    m.response(200)
    metrics = EngineMetrics(lambda: [])
    metrics.response("metrics", 200)
    assert "Requests2XX{" not in metrics.exposition().decode()
    only = m.exposition(["Requests2XX"])
    assert only.splitlines()[1:] == [
        "# TYPE Requests2XX counter",
        'Requests2XX{Level="Host",Hostname="h",} 1.0',
    ]
    assert m.exposition(["nothing"]) == ""
