"""The server extension's gateway and an engine on https with a self-signed certificate.

The gateway trusts the certificate the engine's discovery file names, pinned: that one and no
other, and without turning verification off. So a port presenting another certificate (or,
when the discovery file names none, one the system does not trust) gets a clear 502, and the
real engine, started with TorchServe's `private_key_file` / `certificate_file`, serves the
sidebar's calls. The certificates are made here; their name is `localhost` while the engine
listens on 127.0.0.1, as with many TorchServe certificates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _serverext_helpers import (
    SERVER_CONFIG,
    RealEngine,
    RecordingEngine,
    predict,
    self_signed,
    server_tls,
)
from tornado.httpclient import HTTPClientError

pytestmark = pytest.mark.slow  # a Jupyter server, and for the last test a real engine


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return SERVER_CONFIG


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    d = tmp_path_factory.mktemp("certs")
    return {
        "engine": self_signed(d / "engine"),
        "other": self_signed(d / "other"),
        # the real engine's: the launcher's ping (the notebook's Client) checks the address
        "real": self_signed(d / "real", ip="127.0.0.1"),
    }


@pytest.fixture
def https_double(
    jp_serverapp: Any, jp_runtime_dir: Path, tmp_path: Path, certs: dict
) -> RecordingEngine:
    """The engine double serving https with the engine's certificate (no discovery yet)."""
    engine = RecordingEngine()
    engine.start(ssl_options=server_tls(*certs["engine"]))
    yield engine
    engine.stop()


async def test_the_engines_own_certificate_is_trusted(
    jp_fetch: Any, https_double: RecordingEngine, jp_runtime_dir: Path, tmp_path: Path, certs
) -> None:
    https_double.write_discovery(Path(jp_runtime_dir), tmp_path, certs["engine"][1])
    status = json.loads((await jp_fetch("torchserve", "engine")).body)
    assert status["running"] is True and status["inference_address"].startswith("https://")
    r = await predict(jp_fetch, "mnist", b"\x89PNG")
    assert json.loads(r.body)["path"] == "/predictions/mnist"
    assert https_double.requests[-1]["headers"]["Content-Type"] == "image/png"


@pytest.mark.parametrize("named", ["other", None])
async def test_a_certificate_other_than_the_engines_is_refused(
    jp_fetch: Any,
    https_double: RecordingEngine,
    jp_runtime_dir: Path,
    tmp_path: Path,
    certs,
    named: str | None,
) -> None:
    """A port whose certificate is not the one the discovery file names (another self-signed
    one), or an engine whose discovery names none, is not talked to: a 502 that says why,
    not "no engine", and the request never reaches the handler."""
    cert = certs[named][1] if named else None
    https_double.write_discovery(Path(jp_runtime_dir), tmp_path, cert)
    with pytest.raises(HTTPClientError) as e:
        await predict(jp_fetch, "mnist", b"\x89PNG")
    assert e.value.code == 502
    body = json.loads(e.value.response.body)
    assert body["type"] == "EngineNotTrusted"
    assert "certificate" in body["message"] and "verify failed" in body["message"]
    assert (str(cert) if cert else "names no certificate_file") in body["message"]
    assert https_double.requests == []


async def test_an_unreadable_certificate_file_is_a_clear_error(
    jp_fetch: Any, https_double: RecordingEngine, jp_runtime_dir: Path, tmp_path: Path
) -> None:
    bogus = tmp_path / "not-a-cert.pem"
    bogus.write_text("hello\n")
    https_double.write_discovery(Path(jp_runtime_dir), tmp_path, bogus)
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("torchserve", "models")
    assert e.value.code == 502
    assert f"{bogus} holds no PEM certificate" in json.loads(e.value.response.body)["message"]


@pytest.fixture(scope="module")
def https_engine(tmp_path_factory: pytest.TempPathFactory, certs) -> Any:
    engine = RealEngine(tmp_path_factory.mktemp("engine")).start(tls=certs["real"])
    yield engine
    engine.stop()


async def test_a_real_engine_on_https_serves_the_sidebar(
    jp_fetch: Any, https_engine: RealEngine, jp_serverapp: Any, jp_runtime_dir: Path, certs
) -> None:
    https_engine.copy_discovery_to(Path(jp_runtime_dir))
    named = json.loads(Path(https_engine.info["discovery_file"]).read_text())["certificate_file"]
    assert named == str(certs["real"][1].resolve())
    overview = json.loads((await jp_fetch("torchserve", "overview")).body)
    assert overview["engine"]["running"] is True
    assert overview["engine"]["management_address"].startswith("https://")
    (mnist,) = [m for m in overview["models"] if m["modelName"] == "mnist"]
    assert mnist["versions"][0]["workers"][0]["status"] == "READY"
    r = await predict(jp_fetch, "mnist", https_engine.png)
    assert r.code == 200
    scores = json.loads(r.body)
    assert max(scores, key=scores.get) == "7"
    metrics = json.loads((await jp_fetch("torchserve", "metrics")).body)
    assert metrics["models"]["mnist"]["requests"] >= 1
