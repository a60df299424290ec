"""TorchServe's token semantics: a TorchServe config.properties with token auth on (its
default) makes the inference API need the inference key, as TorchServe does; so does an
inference address beyond loopback. `/token?type=...` with the API key rotates a key and
writes the key file; keys expire after `token_expiration_min`."""

from __future__ import annotations

import calendar
import json
import time
from pathlib import Path

import pytest
import requests
from _engine_helpers import model_store, running_engine

from jupyter_torchserve.config import EngineConfig, load_ts_config
from jupyter_torchserve.engine.keys import inference_needs_key

INVALID = "InvalidKeyException"


@pytest.mark.parametrize(
    "address, needs",
    [
        ("http://127.0.0.1:8080", False),  # the notebook's default: open, documented
        ("http://localhost:8080", False),
        ("http://[::1]:8080", False),
        ("http://0.0.0.0:8080", True),
        ("http://192.168.1.5:8080", True),
        ("http://myhost.example:8080", True),
    ],
)
def test_inference_beyond_loopback_needs_its_key(address, needs):
    assert inference_needs_key(EngineConfig(inference_address=address)) is needs
    off = EngineConfig(inference_address=address, disable_token_authorization=True)
    assert inference_needs_key(off) is False


def test_a_torchserve_config_with_token_auth_on_requires_the_inference_key(tmp_path: Path):
    (tmp_path / "on.properties").write_text("inference_address=http://127.0.0.1:8080\n")
    (tmp_path / "off.properties").write_text("disable_token_authorization=true\n")
    on = load_ts_config(tmp_path / "on.properties")
    assert on["inference_token_required"] is True  # TorchServe 0.12's default
    off = load_ts_config(tmp_path / "off.properties")
    assert off["inference_token_required"] is False


def _keys(info) -> dict:
    return json.loads(Path(info["key_file"]).read_text())


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_torchserve_config_tokens_rotate_and_expire(tmp_path: Path):
    store = model_store(tmp_path, "t")
    props = tmp_path / "config.properties"
    props.write_text("token_expiration_min=0.2\n")  # 12 s
    values = {k: v for k, v in load_ts_config(props).items() if k != "_ignored"}
    with running_engine(tmp_path, model_store=str(store), **values) as (info, c):
        mgmt, base = info["management_address"], info["inference_address"]
        keys = _keys(info)
        r = requests.post(
            f"{mgmt}/models?url=t-1.0.mar&initial_workers=1",
            headers=_bearer(keys["management"]["key"]),
        )
        assert r.status_code == 200, r.text
        # a fresh inference key (the first may be near its end after the register)
        r = requests.get(f"{mgmt}/token?type=inference", headers=_bearer(keys["API"]["key"]))
        assert r.status_code == 200 and r.text == ""
        keys = _keys(info)
        for path in ("/ping", "/predictions/t"):
            r = requests.post(base + path) if path != "/ping" else requests.get(base + path)
            assert r.status_code == 400 and r.json()["type"] == INVALID, path
        r = requests.post(
            base + "/predictions/t", json={"echo": 1}, headers=_bearer(keys["inference"]["key"])
        )
        assert r.status_code == 200 and r.json()["echo"] == 1
        # the token API: only the API key may ask; the new key replaces the old one
        r = requests.get(f"{mgmt}/token?type=inference", headers=_bearer(keys["management"]["key"]))
        assert r.status_code == 400 and r.json()["type"] == INVALID
        r = requests.get(f"{mgmt}/token?type=inference", headers=_bearer(keys["API"]["key"]))
        assert r.status_code == 200
        new = _keys(info)
        assert new["inference"]["key"] != keys["inference"]["key"]
        assert new["management"]["key"] == keys["management"]["key"]
        old = requests.post(
            base + "/predictions/t", json={}, headers=_bearer(keys["inference"]["key"])
        )
        assert old.status_code == 400 and old.json()["type"] == INVALID
        ok = requests.post(
            base + "/predictions/t", json={"echo": 2}, headers=_bearer(new["inference"]["key"])
        )
        assert ok.status_code == 200 and ok.json()["echo"] == 2
        # after token_expiration_min the keys stop working; the API key makes fresh ones
        stamp = time.strptime(new["management"]["expiration time"], "%Y-%m-%dT%H:%M:%SZ")
        expires = calendar.timegm(stamp)
        time.sleep(max(0.0, expires - time.time()) + 1.5)
        r = requests.get(f"{mgmt}/models", headers=_bearer(new["management"]["key"]))
        assert r.status_code == 400 and r.json()["type"] == INVALID
        r = requests.get(f"{mgmt}/token?type=management", headers=_bearer(new["API"]["key"]))
        assert r.status_code == 200
        r = requests.get(f"{mgmt}/models", headers=_bearer(_keys(info)["management"]["key"]))
        assert r.status_code == 200 and r.json()["models"][0]["modelName"] == "t"
