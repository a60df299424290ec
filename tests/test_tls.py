"""HTTPS on all three ports from TorchServe's `private_key_file` / `certificate_file`, with a
self-signed certificate made here by openssl: our engine, and side by side a real TorchServe
0.12 with the same config keys and certificate."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests
from _engine_helpers import model_store, running_engine
from _ports import free_port
from _torchserve_helpers import TorchServe, skip_reason

from jupyter_torchserve.launcher import EngineStartError, start_engine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]  # starts real processes


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _self_signed(tmp_path_factory.mktemp("tls"), "cert", "127.0.0.1", "IP:127.0.0.1")


def https_addresses() -> dict[str, str]:
    return {
        f"{api}_address": f"https://127.0.0.1:{free_port()}"
        for api in ("inference", "management", "metrics")
    }


def test_all_three_ports_serve_https_with_torchserves_keys(tmp_path: Path, pem):
    key, cert = pem
    store = model_store(tmp_path, "probe")
    addrs = https_addresses()
    with running_engine(
        tmp_path,
        model_store=str(store),
        private_key_file=str(key),
        certificate_file=str(cert),
        **addrs,
    ) as (info, client):
        assert info["inference_address"].startswith("https://")
        # our client trusts the engine's certificate (deploy, the magic, the CLI use it)
        client.register("probe-1.0.mar", initial_workers=1)
        base = addrs["inference_address"]
        r = requests.get(base + "/ping", verify=str(cert))
        assert r.status_code == 200 and r.json() == {"status": "Healthy"}
        # the fast path (predictions, KServe) and Tornado's routes, all over TLS
        r = requests.post(base + "/predictions/probe", json={"echo": "tls"}, verify=str(cert))
        assert r.status_code == 200 and r.json()["echo"] == "tls"
        r = requests.post(
            base + "/v1/models/probe:predict",
            json={"instances": [{"body": {"echo": 1}}]},
            verify=str(cert),
        )
        assert r.status_code == 200 and r.json()["predictions"][0]["echo"] == 1
        auth = {"Authorization": f"Bearer {client.token}"}
        r = requests.get(addrs["management_address"] + "/models", headers=auth, verify=str(cert))
        assert r.status_code == 200 and r.json()["models"][0]["modelName"] == "probe"
        r = requests.get(addrs["metrics_address"] + "/metrics", verify=str(cert))
        assert r.status_code == 200 and "Requests2XX" in r.text
        # a client that does not trust the certificate is refused by TLS, not served plain
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(base + "/ping")
        plain = "http://" + base.removeprefix("https://")
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(plain + "/ping", timeout=10)


def test_https_without_key_and_certificate_fails_at_start_saying_why(tmp_path: Path):
    with pytest.raises(EngineStartError) as e:
        start_engine(
            model_store=str(tmp_path),
            state_dir=str(tmp_path / "state"),
            timeout=60,
            **https_addresses(),
        )
    assert "private_key_file and certificate_file" in str(e.value)


TS_SKIP = skip_reason()


@pytest.mark.torchserve
@pytest.mark.skipif(TS_SKIP is not None, reason=TS_SKIP or "")
@pytest.mark.parametrize("keys", ["pem", "keystore"])
def test_torchserve_serves_the_same_https_config(tmp_path: Path, pem, p12, keys, monkeypatch):
    """Side by side: TorchServe 0.12 with the same keys (the PEM pair, or the PKCS12 keystore)
    answers the same calls over TLS."""
    key, cert = pem
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # the helper's own /ping polls
    store = model_store(tmp_path, "probe")
    ts = TorchServe(tmp_path / "ts", store)
    text = ts.config.read_text().replace("=http://", "=https://")
    if keys == "pem":
        text += f"private_key_file={key}\ncertificate_file={cert}\n"
    else:
        text += f"keystore={p12}\nkeystore_pass=changeit\nkeystore_type=PKCS12\n"
    ts.config.write_text(text)
    ts.inference, ts.management, ts.metrics = (
        "https://" + u.removeprefix("http://") for u in (ts.inference, ts.management, ts.metrics)
    )
    try:
        ts.start()
        assert requests.get(ts.inference + "/ping").json() == {"status": "Healthy"}
        r = requests.post(ts.management + "/models?url=probe-1.0.mar&initial_workers=1")
        assert r.status_code == 200, r.text
        r = requests.post(ts.inference + "/predictions/probe", json={"echo": "tls"})
        assert r.status_code == 200 and r.json()["echo"] == "tls"
        assert requests.get(ts.metrics + "/metrics").status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(ts.inference + "/ping", verify="/etc/ssl/certs/ca-certificates.crt")
    finally:
        ts.stop()


@pytest.fixture(scope="module")
def p12(pem, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same key and certificate as a PKCS12 keystore (TorchServe's `keystore` keys)."""
    key, cert = pem
    path = tmp_path_factory.mktemp("p12") / "keystore.p12"
    subprocess.run(
        ["openssl", "pkcs12", "-export", "-inkey", str(key), "-in", str(cert)]
        + ["-out", str(path), "-passout", "pass:changeit", "-name", "ts"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path


def test_a_pkcs12_keystore_serves_https_as_the_pem_pair_does(tmp_path: Path, pem, p12):
    _, cert = pem
    store = model_store(tmp_path, "probe")
    addrs = https_addresses()
    with running_engine(
        tmp_path,
        model_store=str(store),
        keystore=str(p12),
        keystore_pass="changeit",
        keystore_type="PKCS12",
        **addrs,
    ) as (info, client):
        client.register("probe-1.0.mar", initial_workers=1)  # our client trusts it too
        r = requests.post(
            addrs["inference_address"] + "/predictions/probe",
            json={"echo": "p12"},
            verify=str(cert),
        )
        assert r.status_code == 200 and r.json()["echo"] == "p12"
        assert Path(info["certificate_file"]).read_bytes().strip() == cert.read_bytes().strip()


def test_a_wrong_keystore_password_or_a_jks_fails_at_start_saying_why(tmp_path: Path, p12):
    for extra, said in (
        ({"keystore_pass": "wrong"}, "Cannot read the keystore"),
        ({"keystore_pass": "changeit", "keystore_type": "JKS"}, "only PKCS12"),
    ):
        with pytest.raises(EngineStartError) as e:
            start_engine(
                model_store=str(tmp_path),
                state_dir=str(tmp_path / f"state-{extra.get('keystore_type', 'p12')}"),
                timeout=60,
                keystore=str(p12),
                **extra,
                **https_addresses(),
            )
        assert said in str(e.value)


def _self_signed(d: Path, name: str, cn: str, san: str) -> tuple[Path, Path]:
    """A self-signed key and certificate, made by openssl, named `cn` / `san`."""
    key, cert = d / f"{name}.key", d / f"{name}.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", f"/CN={cn}"]
        + ["-addext", f"subjectAltName={san}"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return key, cert


def test_a_certificate_named_localhost_serves_the_127_0_0_1_the_engine_reports(
    tmp_path: Path,
):
    """Many TorchServe certificates say `CN=localhost` while the engine reports (and our
    client dials) 127.0.0.1. The client pins the engine's own certificate, as the sidebar's
    gateway does, so start, register and predict work; a server showing any other
    certificate is refused, name or not."""
    from jupyter_torchserve.client import Client
    from jupyter_torchserve.contract import EngineNotRunning

    key, cert = _self_signed(tmp_path, "engine", "localhost", "DNS:localhost")
    _, other = _self_signed(tmp_path, "other", "localhost", "DNS:localhost")
    store = model_store(tmp_path, "probe")
    with running_engine(
        tmp_path,
        model_store=str(store),
        private_key_file=str(key),
        certificate_file=str(cert),
        **https_addresses(),
    ) as (info, client):
        client.register("probe-1.0.mar", initial_workers=1, synchronous=True)
        answer = client.predict("probe", {"echo": "pinned"}, content_type="application/json")
        assert json.loads(answer.body)["echo"] == "pinned"
        stranger = Client.from_info({**info, "certificate_file": str(other)}, timeout=10)
        with pytest.raises(EngineNotRunning, match="CERTIFICATE_VERIFY_FAILED"):
            stranger.list_models()


def test_client_grpc_speaks_tls_pinned_to_the_engines_certificate(tmp_path: Path):
    """`enable_grpc_ssl` with a `CN=localhost` certificate: `Client.grpc()` dials the
    127.0.0.1 the engine reports over TLS, trusting that certificate alone (gRPC checks
    the name, so the client takes it from the certificate). Predictions, KServe v2
    ModelInfer and a management call answer; plaintext to the TLS port, or TLS pinned to
    another certificate, is refused."""
    import numpy as np
    from _engine_helpers import linear_mar
    from _grpc_helpers import grpc_engine

    from jupyter_torchserve.client import Client
    from jupyter_torchserve.contract import EngineNotRunning

    key, cert = _self_signed(tmp_path, "engine", "localhost", "DNS:localhost")
    _, other = _self_signed(tmp_path, "other", "localhost", "DNS:localhost")
    store = model_store(tmp_path, "probe")
    linear_mar(store)
    tls = dict(enable_grpc_ssl=True, private_key_file=str(key), certificate_file=str(cert))
    with grpc_engine(tmp_path, model_store=str(store), **tls) as (info, client, _):
        assert info["grpc_ssl"] is True
        assert info["grpc_inference_address"].startswith("127.0.0.1:")
        client.register("probe-1.0.mar", initial_workers=1)
        with client.grpc() as g:
            assert json.loads(g.predict("probe", '{"echo": "tls"}', key="body"))["echo"] == "tls"
            assert g.register("linear-1.0.mar", initial_workers=1, synchronous=True)
            x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
            (out,) = g.infer("linear", {"input-0": x}).values()
            assert out.shape == (1, 3) and out.dtype == np.float32
            assert {m["modelName"] for m in g.list_models()["models"]} == {"probe", "linear"}
        plain = Client.from_info({**info, "grpc_ssl": False}, timeout=10)
        with plain.grpc() as g, pytest.raises(EngineNotRunning):
            g.ping()
        stranger = Client.from_info({**info, "certificate_file": str(other)}, timeout=10)
        with stranger.grpc() as g, pytest.raises(EngineNotRunning, match="CERTIFICATE_VERIFY"):
            g.ping()


def test_every_printed_snippet_runs_against_a_tls_engine_named_localhost(tmp_path: Path):
    """`deploy`'s snippets against an engine with https on all three ports and
    `enable_grpc_ssl`, whose certificate says `CN=localhost` while the engine reports
    127.0.0.1: each curl line, both requests snippets and the Python gRPC one run as
    printed, trusting that certificate alone (curl's `--cacert`, requests' `verify`, gRPC's
    pinned root) and checking the name it carries. The same lines pinned to another
    certificate are refused, so the pin is what lets them through."""
    import shlex
    import sys

    import numpy as np
    from _engine_helpers import linear_mar
    from _grpc_helpers import grpc_engine

    from jupyter_torchserve.deployment import Deployment

    key, cert = _self_signed(tmp_path, "engine", "localhost", "DNS:localhost")
    _, other = _self_signed(tmp_path, "other", "localhost", "DNS:localhost")
    store = model_store(tmp_path)
    linear_mar(store)
    x = [[1.0, 2.0, 3.0, 4.0]]
    payloads = {
        "raw": {"linear.json": x},
        "v1": {"linear-v1.json": {"instances": x}},
        "v2": {
            "linear-v2.json": {
                "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": x[0]}]
            }
        },
    }
    for kind, files in payloads.items():
        ((file, body),) = files.items()
        (store / file).write_text(json.dumps(body))
        payloads[kind] = str(store / file)  # type: ignore[assignment]
    tls = dict(enable_grpc_ssl=True, private_key_file=str(key), certificate_file=str(cert))
    with grpc_engine(tmp_path, model_store=str(store), **tls, **https_addresses()) as (
        info,
        client,
        _,
    ):
        assert info["inference_address"].startswith("https://127.0.0.1:") and info["grpc_ssl"]
        client.register("linear-1.0.mar", initial_workers=1, synchronous=True)
        dep = Deployment("linear", "1.0", "tensor", info, str(store / "linear-1.0.mar"))
        dep.payloads = payloads  # type: ignore[assignment]
        snippets = dep.snippets
        want = client.predict("linear", x, content_type="application/json")
        want = np.asarray(json.loads(want.body), dtype=float).reshape(1, 3)

        def sh(line: str) -> str:
            out = subprocess.run(line, shell=True, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, (line, out.stderr)
            return out.stdout

        np.testing.assert_allclose(np.reshape(json.loads(sh(snippets["curl"])), (1, 3)), want)
        assert "--cacert" in snippets["curl"] and "--connect-to" in snippets["curl"]
        v1 = json.loads(sh(snippets["curl_v1"]))["predictions"]
        np.testing.assert_allclose(np.reshape(v1, (1, 3)), want, rtol=1e-5)
        v2 = json.loads(sh(snippets["curl_v2"]))["outputs"][0]["data"]
        np.testing.assert_allclose(np.reshape(v2, (1, 3)), want, rtol=1e-5)
        assert json.loads(sh(snippets["curl_describe"]))[0]["modelName"] == "linear"
        assert "ts_inference_requests_total" in sh(snippets["curl_metrics"])
        sh(snippets["curl_scale"])  # synchronous: the workers are up when it answers
        assert len(client.describe("linear")[0]["workers"]) == 2
        # the Python snippets, each in a fresh interpreter as a user pastes them
        for key in ("python", "python_v2", "python_grpc"):
            out = subprocess.run(
                [sys.executable, "-c", snippets[key]], capture_output=True, text=True, timeout=120
            )
            assert out.returncode == 0, (key, snippets[key], out.stderr)
            assert out.stdout.strip(), key
        printed = subprocess.run(
            [sys.executable, "-c", snippets["python_grpc"]], capture_output=True, text=True
        ).stdout
        np.testing.assert_allclose(np.reshape(json.loads(printed), (1, 3)), want, rtol=1e-5)
        assert f"-cacert '{cert}' -servername 'localhost'" in snippets["grpcurl"]
        assert "-plaintext" not in snippets["grpcurl"]
        # the same lines trusting another certificate fail: the pin, not a bypass, passes them
        for key in ("curl", "python", "python_grpc"):
            stranger = snippets[key].replace(str(cert), str(other))
            line = stranger if key == "curl" else f"{sys.executable} -c {shlex.quote(stranger)}"
            refused = subprocess.run(line, shell=True, capture_output=True, timeout=120)
            assert refused.returncode != 0, key
