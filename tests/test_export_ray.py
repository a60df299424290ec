"""Issue 15: the Ray bundle on a real local Ray cluster (`ray start --head` on 127.0.0.1, one
cluster for the module): `export(..., to="ray", run=True)` deploys two replicas, `serve status`
shows them RUNNING, TorchServe's `/predictions/NAME`, KServe v1 and v2 answer with the
kernel's answers, and a redeploy at one replica scales it down. The cluster stays on
loopback except for the one socket Ray Serve opens in every replica on all interfaces
(hard-coded in Ray 2.60; ../shared/notes/ray-on-this-machine.md), which is only reported.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from _export_helpers import NotebookModel, assert_top5, kserve_requests, notebook_model, v2_value

from jupyter_torchserve.export import export
from jupyter_torchserve.export.ray_cluster import (
    LocalRayCluster,
    ray_installed,
    running_replicas,
    serve_status,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(
        not ray_installed(), reason="ray[serve] is not installed (the test extra has it)"
    ),
]


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> NotebookModel:
    return notebook_model(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRayCluster]:
    c = LocalRayCluster().start()
    try:
        yield c
    finally:
        c.stop()
        assert not _group_members(c), "Ray processes outlived the cluster's stop()"


def _group_members(c: LocalRayCluster) -> list[int]:
    import psutil

    pgid = getattr(c, "_pgid", None)
    return [p.pid for p in psutil.process_iter() if pgid and _pgid(p.pid) == pgid]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def deploy(notebook: NotebookModel, out: Path, cluster: LocalRayCluster, replicas: int):
    return export(
        notebook.archive,
        to="ray",
        out=out,
        min_replicas=replicas,
        max_replicas=replicas,
        run=True,
        ray_address=cluster.dashboard_url,
        serve_port=cluster.ports.serve_http,
        force=True,
    )


def ask_all(base: str, notebook: NotebookModel) -> None:
    for digit in (2, 5, 9):
        want = notebook.top5(digit)
        png = notebook.png(digit)
        r = requests.put(f"{base}/predictions/mnist", data=png, timeout=120)
        assert r.status_code == 200, r.text[:500]
        assert_top5(r.json(), want, f"Ray /predictions, digit {digit}")
        v1, v2 = kserve_requests(png, "mnist")
        r = requests.post(f"{base}/v1/models/mnist:predict", json=v1, timeout=120)
        assert r.status_code == 200, r.text[:500]
        assert_top5(r.json()["predictions"][0], want, f"Ray v1, digit {digit}")
        r = requests.post(f"{base}/v2/models/mnist/infer", json=v2, timeout=120)
        assert r.status_code == 200, r.text[:500]
        assert_top5(v2_value(r.json()), want, f"Ray v2, digit {digit}")


def test_two_replicas_answer_like_the_kernel_and_scale(
    notebook: NotebookModel, cluster: LocalRayCluster, tmp_path: Path
) -> None:
    cluster._pgid = cluster.proc.pid  # type: ignore[union-attr,attr-defined]
    bundle = deploy(notebook, tmp_path / "mnist-ray", cluster, 2)
    base = cluster.serve_url
    assert bundle.url == f"{base}/predictions/mnist"
    status = serve_status(cluster.dashboard_url)
    assert running_replicas(status, "mnist", "TorchServeModel") == 2, status
    ask_all(base, notebook)
    # TorchServe's error shape for a model this application does not serve
    r = requests.post(f"{base}/v2/models/other/infer", json={}, timeout=60)
    assert r.status_code == 404 and r.json()["type"] == "ModelNotFoundException"
    _only_loopback(cluster)

    deploy(notebook, tmp_path / "mnist-ray", cluster, 1)
    status = serve_status(cluster.dashboard_url)
    assert running_replicas(status, "mnist", "TorchServeModel") == 1, status
    r = requests.put(f"{base}/predictions/mnist", data=notebook.png(7), timeout=120)
    assert_top5(r.json(), notebook.top5(7), "Ray after scaling to one replica")


def _loopback(ip: str) -> bool:
    import ipaddress

    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def _only_loopback(cluster: LocalRayCluster) -> None:
    """Every listening socket of the cluster's processes is on loopback, except Ray Serve's
    per-replica gRPC server (bound to all interfaces by Ray itself), which is reported."""
    import psutil

    outside = []
    for conn in psutil.net_connections("inet"):
        if conn.status != "LISTEN" or not conn.pid or _pgid(conn.pid) != cluster.proc.pid:  # type: ignore[union-attr]
            continue
        if _loopback(conn.laddr.ip):
            continue
        name = " ".join(psutil.Process(conn.pid).cmdline()[:2])
        outside.append((conn.laddr.ip, conn.laddr.port, name))
    unexpected = [o for o in outside if "ServeReplica" not in o[2]]
    for ip, port, name in outside:
        print(f"INFO: {name} listens on {ip}:{port} (Ray Serve's inter-deployment gRPC)")
    assert not unexpected, unexpected


def test_a_cluster_started_for_a_run_ends_with_the_process_that_started_it() -> None:
    """`export(..., run=True)` starts Ray in its own session, so nothing ties it to the
    kernel: a kernel that exits (or restarts) must take its cluster along, not leave a
    Ray head running until the machine reboots."""
    import subprocess
    import sys
    import time

    import psutil

    started = subprocess.run(
        [
            sys.executable,
            "-c",
            "from jupyter_torchserve.export.ray_cluster import LocalRayCluster\n"
            "c = LocalRayCluster().start()\n"
            "print(c.proc.pid, flush=True)\n",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert started.returncode == 0, started.stderr[-3000:]
    pgid = int(started.stdout.split()[-1])
    deadline = time.monotonic() + 30
    left = [0]
    while time.monotonic() < deadline and left:
        left = [
            p.pid
            for p in psutil.process_iter(["status"])
            if _pgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE
        ]
        time.sleep(0.5)
    assert not left, f"Ray processes {left} outlived the process that started them"
