"""The notebook user's path (issue 12): which engine a kernel talks to, --replace, an
all-or-nothing deploy, ``ts`` in a cell, and a clear refusal of paths outside the store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from _notebook_helpers import KernelSession, free_port, ts_env  # noqa: F401

from jupyter_torchserve import api, discovery, launcher
from jupyter_torchserve.client import Client
from jupyter_torchserve.deployment import deploy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _addresses(store: str) -> dict[str, str]:
    return {
        "inference_address": f"http://127.0.0.1:{free_port()}",
        "management_address": f"http://127.0.0.1:{free_port()}",
        "metrics_address": f"http://127.0.0.1:{free_port()}",
        "model_store": store,
    }


@pytest.fixture(scope="module")
def two_engines(ts_env: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:  # noqa: F811
    """Engine A, then engine B (the newest): the case where "the newest" is the wrong one."""
    root = ts_env["root"]
    a = launcher.start_engine(**_addresses(str(root / "store-a")))
    b = launcher.start_engine(**_addresses(str(root / "store-b")))
    return a, b


def _names(info: dict[str, Any]) -> list[str]:
    return [m["modelName"] for m in Client.from_info(info).models]


def test_kernel_stays_on_the_engine_it_started_or_chose(two_engines, ts_env) -> None:  # noqa: F811
    a, b = two_engines
    k = KernelSession(cwd=str(ts_env["root"]))
    try:
        setup = (
            "%load_ext jupyter_torchserve\nimport torch\ntorch.manual_seed(0)\n"
            "lin = torch.nn.Linear(3, 2)\nx = torch.ones(1, 3)"
        )
        assert k.run(setup)["status"] == "ok"
        out = k.run(
            f"%torchserve start --inference-address {a['inference_address']} "
            f"--management-address {a['management_address']}"
        )
        assert out["status"] == "ok", out["error"]
        assert f"This kernel now uses pid {a['pid']}" in out["stdout"]
        out = k.run("dep = %torchserve deploy lin --name pinned_lin --example x")
        assert out["status"] == "ok", out["error"]
        # it went to A, the engine the user named, not to B, the newest
        assert "pinned_lin" in _names(a) and "pinned_lin" not in _names(b)
        out = k.run("%torchserve predict pinned_lin --data '[[1, 1, 1]]'")
        assert out["status"] == "ok", out["error"]
        # the printed management snippet names A (and reads A's key): run it as printed
        out = k.run(
            "import subprocess\n"
            "print(subprocess.run(dep.snippets['curl_describe'], shell=True, "
            "capture_output=True, text=True).stdout)"
        )
        assert out["status"] == "ok", out["error"]
        assert json.loads(out["stdout"])[0]["modelName"] == "pinned_lin"
        # the export reads the model from A as well
        bundle = ts_env["root"] / "pinned-export"
        out = k.run(f"%torchserve export pinned_lin --to torchserve --out {bundle}")
        assert out["status"] == "ok", out["error"]
        assert (
            f"served by the engine at {a['management_address']}"
            in (bundle / "README.md").read_text()
        )
        # switching to B: verbs go there; a Deployment keeps talking to the engine serving it
        out = k.run(f"%torchserve use --pid {b['pid']}")
        assert out["status"] == "ok", out["error"]
        assert f"Using engine pid {b['pid']}" in out["stdout"]
        out = k.run("%torchserve list")
        assert out["status"] == "ok" and "pinned_lin" not in str(out["data"])
        out = k.run("print(dep.predict([[1.0, 1.0, 1.0]]))")
        assert out["status"] == "ok", out["error"]
        assert len(json.loads(out["stdout"].replace("'", '"'))[0]) == 2
        out = k.run("%torchserve use --port 1")
        assert out["status"] == "error" and "Running engines" in str(out["error"]["evalue"])
    finally:
        k.close()
    api.unregister("pinned_lin", c=Client.from_info(a))


def test_token_cli_picks_the_engine(two_engines) -> None:
    a, b = two_engines
    for how in (["--pid", str(a["pid"])], ["--management-address", a["management_address"]]):
        out = subprocess.run(
            [sys.executable, "-m", "jupyter_torchserve", "token", *how],
            capture_output=True,
            text=True,
            check=True,
        )
        assert (
            out.stdout.strip()
            == discovery.read_keys(a).management
            != discovery.read_keys(b).management
        )
    out = subprocess.run(
        [sys.executable, "-m", "jupyter_torchserve", "token", "--pid", "1"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "no running engine matches" in out.stderr


def test_api_use_pins_and_start_keeps_the_pin(two_engines) -> None:
    a, b = two_engines
    try:
        assert api.use(pid=a["pid"])["pid"] == a["pid"]
        assert api.find()["pid"] == a["pid"]  # not B, the newest
        info, started = api.start()
        assert info["pid"] == a["pid"] and not started
        port = int(b["metrics_address"].rsplit(":", 1)[1])
        assert api.use(port=port)["pid"] == b["pid"]
        assert api.use(a)["pid"] == a["pid"]  # the info start/find gave, as client(info)
        assert api.find()["pid"] == a["pid"]
    finally:
        api._pinned = None


def test_replace_without_version_replaces_the_default_and_keeps_it(two_engines) -> None:
    import torch

    a, _ = two_engines
    c = Client.from_info(a)
    api.use(pid=a["pid"])
    try:
        x = torch.ones(1, 3)
        torch.manual_seed(0)
        first, second, third = (torch.nn.Linear(3, 2) for _ in range(3))
        deploy(first, "rep", example=x, progress="none")
        # a first deploy leaves no 404 warning in the engine's log
        assert "404 GET /models/rep" not in Path(a["log_file"]).read_text()
        deploy(second, "rep", version="2.0", example=x, progress="none")
        api.set_default("rep", "2.0", c=c)
        # describe says which version is the default (beside TorchServe's keys)
        flags = {d["modelVersion"]: d["isDefault"] for d in c.describe("rep", "all")}
        assert flags == {"1.0": False, "2.0": True}
        dep = deploy(third, "rep", replace=True, example=x, progress="none")
        assert dep.version == "2.0" and dep.is_default and dep.replaced
        flags = {d["modelVersion"]: d["isDefault"] for d in c.describe("rep", "all")}
        assert flags == {"1.0": False, "2.0": True}
        got = api.predict("rep", [[1.0, 1.0, 1.0]], c=c)
        assert torch.allclose(torch.tensor(got), third(x).detach(), atol=1e-5)
        assert dep.parity.ok
    finally:
        for v in ("1.0", "2.0"):
            try:
                api.set_default("rep", "1.0", c=c) if v == "2.0" else None
                api.unregister("rep", v, c=c)
            except api.TorchServeError:
                pass
        api._pinned = None


def test_failed_deploy_rolls_back_and_workers_0_skips_parity(two_engines) -> None:
    import torch

    a, _ = two_engines
    c = Client.from_info(a)
    api.use(pid=a["pid"])
    try:
        lin = torch.nn.Linear(3, 2)
        x = torch.ones(1, 3)
        # parity crash (the handler answers 500): nothing is left registered
        bad = {"postprocess": _raise}
        with pytest.raises(api.TorchServeError, match="rolled back") as e:
            deploy(lin, "atomic", handler=bad, example=x, progress="none")
        assert "atomic" not in _names(a), e.value
        store = a["model_store"]
        assert not list(__import__("pathlib").Path(store).glob("atomic-*"))
        # re-running the cell works: not "already served"
        dep = deploy(lin, "atomic", workers=0, example=x, progress="none")
        assert dep.parity.ok is None and "0 workers" in dep.parity.detail
        assert "scale" in str(dep.parity)
        api.scale("atomic", 1, c=c)
        assert len(api.predict("atomic", [[1.0, 1.0, 1.0]], c=c)[0]) == 2
        api.unregister("atomic", c=c)
    finally:
        api._pinned = None


def _raise(output):  # noqa: ANN001, ANN201
    raise RuntimeError("postprocess failed on purpose")


def test_absolute_path_outside_the_store_is_a_clear_400(two_engines, tmp_path) -> None:
    a, _ = two_engines
    outside = tmp_path / "x.mar"
    outside.write_bytes(b"not an archive")
    c = Client.from_info(a)
    for url in (str(outside), outside.as_uri()):
        r = requests.post(
            a["management_address"] + "/models",
            params={"url": url},
            headers={"Authorization": f"Bearer {c.token}"} if c.token else {},
        )
        assert r.status_code == 400, r.text
        assert "outside the model store" in r.json()["message"]


def test_ts_base_handler_in_a_cell(two_engines, ts_env) -> None:  # noqa: F811
    a, _ = two_engines
    k = KernelSession(cwd=str(ts_env["root"]))
    try:
        out = k.run("import importlib.util; print(importlib.util.find_spec('ts'))")
        assert out["stdout"].strip() == "None"  # the real torchserve is absent here
        code = (
            "%load_ext jupyter_torchserve\n"
            f"%torchserve use --pid {a['pid']}\n"
            "from ts.torch_handler.base_handler import BaseHandler\n"
            "import torch\n"
            "class RowsIn(BaseHandler):\n"
            "    def preprocess(self, data):\n"
            "        rows = [row.get('data') or row.get('body') for row in data]\n"
            "        return torch.cat([torch.as_tensor(r, dtype=torch.float32) for r in rows])\n"
            "    def postprocess(self, data):\n"
            "        return [data.tolist()]\n"
            "torch.manual_seed(0)\nlin = torch.nn.Linear(3, 2)\nx = torch.ones(1, 3)\n"
        )
        out = k.run(code)
        assert out["status"] == "ok", out["error"]
        out = k.run("dep = %torchserve deploy lin --name cell_handler --handler RowsIn --example x")
        assert out["status"] == "ok", out["error"]
        # the label-map warning is not printed for a handler that names no classes
        assert "index_to_name.json" not in out["stdout"] + out["stderr"]
        out = k.run("print(dep.parity.ok, dep.predict([[1.0, 1.0, 1.0]]))")
        assert out["status"] == "ok", out["error"]
        assert out["stdout"].startswith("True")
    finally:
        k.close()
    api.unregister("cell_handler", c=Client.from_info(a))
