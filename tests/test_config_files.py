"""Config files reach the engines a kernel, the CLI and the Jupyter server start (issue 12, 5).

An engine runs in its own process, which never sees the files its starter loaded; each test
starts a real engine the user's way and sends a body larger than the configured
``max_request_size``: the 413 names the limit from the file, not the 6553500 default.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from _notebook_helpers import KernelSession, free_port, stop_engines, ts_env  # noqa: F401
from _serverext_helpers import SERVER_CONFIG

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

LIMIT = 12345


def _addresses() -> dict[str, str]:
    return {k: f"http://127.0.0.1:{free_port()}" for k in ("inference", "management", "metrics")}


def _limit_of(inference_address: str) -> str:
    r = requests.post(inference_address + "/predictions/any", data=b"x" * (LIMIT + 100))
    assert r.status_code == 413, r.text
    return r.json()["message"]


def test_ipython_config_reaches_the_kernels_engine(ts_env: dict[str, Any]) -> None:  # noqa: F811
    root = ts_env["root"]
    profile = root / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_config.py").write_text(f"c.EngineConfig.max_request_size = {LIMIT}\n")
    a = _addresses()
    k = KernelSession(env={"IPYTHONDIR": str(root / "ipython")}, cwd=str(root))
    try:
        out = k.run(
            "%load_ext jupyter_torchserve\n"
            f"%torchserve start --inference-address {a['inference']} "
            f"--management-address {a['management']} --metrics-address {a['metrics']}"
        )
        assert out["status"] == "ok", out["error"]
    finally:
        k.close()
    try:
        assert f"({LIMIT} bytes)" in _limit_of(a["inference"])
    finally:
        stop_engines()


def test_jupyter_torchserve_config_reaches_the_cli_engine(ts_env: dict[str, Any]) -> None:  # noqa: F811
    config_dir = ts_env["root"] / "jupyter-config"
    config_dir.mkdir()
    (config_dir / "jupyter_torchserve_config.py").write_text(
        f"c.EngineConfig.max_request_size = {LIMIT}\n"
    )
    a = _addresses()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config_dir)}
    cmd = [sys.executable, "-m", "jupyter_torchserve", "start"]
    flags = [f"--{k}-address={v}" for k, v in a.items()]
    try:
        subprocess.run(cmd + flags, env=env, check=True, capture_output=True, timeout=120)
        assert f"({LIMIT} bytes)" in _limit_of(a["inference"])
    finally:
        stop_engines()


@pytest.fixture
def jp_server_config(tmp_path: Path) -> dict[str, Any]:
    a = _addresses()
    return {
        **SERVER_CONFIG,
        "EngineConfig": {
            "max_request_size": LIMIT,
            "inference_address": a["inference"],
            "management_address": a["management"],
            "metrics_address": a["metrics"],
            "model_store": str(tmp_path / "store"),
        },
    }


async def test_jupyter_server_config_reaches_the_servers_engine(
    jp_fetch: Any, jp_server_config: dict[str, Any]
) -> None:
    address = jp_server_config["EngineConfig"]["inference_address"]
    try:
        resp = await jp_fetch("torchserve", "engine", method="POST", body=b"{}")
        assert json.loads(resp.body)["running"]
        assert f"({LIMIT} bytes)" in _limit_of(address)
    finally:
        stop_engines()  # every engine of this test's private runtime dir, whatever its ports
