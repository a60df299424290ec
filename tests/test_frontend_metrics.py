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
# every family of TorchServe's default page is ours too
NOT_OURS: set[str] = set()


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


def probe_version(load_ms: float | None = 812.5, thread_ms: float | None = 0.25) -> SimpleNamespace:
    """A model version as the scrape reads it, with one worker that loaded and answered."""
    worker = SimpleNamespace(
        id="9000", status="READY", pid=None, device="cpu",
        load_ms=load_ms, thread_ms=thread_ms, thread_at=1.0,
    )  # fmt: skip
    return SimpleNamespace(name="probe", version="1.0", queue=[], workers=[worker])


def handler_times(model: str, handler_ms: float, prediction_ms: float) -> list[dict]:
    """What a worker's frame carries after a batch (worker_main._drain_metrics)."""
    return [
        {"name": n, "value": v, "type": "GAUGE", "dims": {"ModelName": model}}
        for n, v in (("HandlerTime", handler_ms), ("PredictionTime", prediction_ms))
    ]


def test_our_page_has_torchserves_frontend_families_as_torchserve_writes_them():
    metrics = EngineMetrics(lambda: [probe_version()])
    metrics.custom(handler_times("probe", 0.62, 0.8))
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


def test_worker_and_handler_times_are_torchserves_gauges_with_the_last_value():
    """WorkerLoadTime per worker under TorchServe's worker name, WorkerThreadTime the latest
    batch of any worker, HandlerTime/PredictionTime each model's last batch; none of them
    also shows up as a custom handler family."""
    version = probe_version(load_ms=1500.0, thread_ms=0.5)
    metrics = EngineMetrics(lambda: [version])
    metrics.custom(handler_times("probe", 1.0, 2.0))
    metrics.custom(handler_times("probe", 3.0, 4.0))
    metrics.custom(handler_times("other", 5.0, 6.0))
    metrics.custom(
        [{"name": "Seen", "value": 1, "type": "COUNTER", "dims": {"ModelName": "probe"}}]
    )
    page = metrics.exposition().decode()
    host = 'Level="Host",Hostname="[^"]+",'
    assert re.search(
        rf'^WorkerLoadTime\{{WorkerName="W-9000-probe_1.0",{host}\}} 1500\.0$', page, re.M
    )
    assert re.search(rf"^WorkerThreadTime\{{{host}\}} 0\.5$", page, re.M)
    model = 'Level="Model",Hostname="[^"]+",'
    assert re.search(rf'^HandlerTime\{{ModelName="probe",{model}\}} 3\.0$', page, re.M)
    assert re.search(rf'^PredictionTime\{{ModelName="other",{model}\}} 6\.0$', page, re.M)
    assert page.count("# TYPE HandlerTime gauge") == 1 and "Handler metric HandlerTime" not in page
    assert re.search(r'^Seen\{ModelName="probe"\} 1\.0$', page, re.M)  # custom ones stay

    # a newer batch of another worker replaces the host's thread time; an older one does not
    version.workers.append(SimpleNamespace(**{**vars(version.workers[0]), "id": "9001",
                                              "thread_ms": 7.0, "thread_at": 2.0}))  # fmt: skip
    metrics.exposition()
    version.workers[0].thread_ms, version.workers[0].thread_at = 9.0, 1.5
    page = metrics.exposition().decode()
    assert re.search(rf"^WorkerThreadTime\{{{host}\}} 7\.0$", page, re.M)
    # a worker that is gone keeps its load time, as TorchServe's gauge does
    version.workers.clear()
    page = metrics.exposition().decode()
    assert 'WorkerName="W-9001-probe_1.0"' in page and 'WorkerName="W-9000-probe_1.0"' in page


def test_a_worker_not_ready_yet_has_no_load_time_and_families_are_listed_before_samples():
    metrics = EngineMetrics(lambda: [probe_version(load_ms=None, thread_ms=None)])
    page = metrics.exposition().decode()
    for name in ("WorkerLoadTime", "WorkerThreadTime", "HandlerTime", "PredictionTime"):
        assert f"# TYPE {name} gauge" in page
        assert not re.search(rf"^{name}\{{", page, re.M), name
