"""Helpers for the server-extension tests.

`RecordingEngine` is a test double of the engine's HTTP boundary only (a few TorchServe-shaped
answers on one port, recording what it receives). It lets the contract tests check what the
server extension *sends* — the management token as `Bearer`, never the Jupyter token — and how
it relays errors, independent of the real engine; the real engine is exercised in
`test_serverext_engine.py`.
"""

from __future__ import annotations

import datetime
import json
import os
import ssl
import time
from pathlib import Path
from typing import Any

import tornado.web
from _ports import free_port
from tornado.httpserver import HTTPServer

#: A Jupyter server with the extension on and every route behind Jupyter's login.
SERVER_CONFIG = {
    "ServerApp": {
        "jpserver_extensions": {"jupyter_torchserve": True},
        "allow_unauthenticated_access": False,
    }
}

MGMT_KEY = "mgmt-SECRET-0123456789"
INF_KEY = "inf-SECRET-9876543210"

METRICS_TEXT = """\
# HELP ts_inference_requests_total Total number of inference requests.
# TYPE ts_inference_requests_total counter
ts_inference_requests_total{model_name="mnist",model_version="1.0",hostname="h"} 10.0
# HELP ts_inference_latency_microseconds Cumulative inference duration in microseconds
# TYPE ts_inference_latency_microseconds counter
ts_inference_latency_microseconds{model_name="mnist",model_version="1.0",hostname="h"} 50000.0
# HELP ts_request_latency_seconds Request latency.
# TYPE ts_request_latency_seconds histogram
ts_request_latency_seconds_bucket{model_name="mnist",le="0.001"} 0.0
ts_request_latency_seconds_bucket{model_name="mnist",le="0.01"} 10.0
ts_request_latency_seconds_bucket{model_name="mnist",le="+Inf"} 10.0
ts_request_latency_seconds_count{model_name="mnist"} 10.0
ts_request_latency_seconds_sum{model_name="mnist"} 0.05
"""


def version(name: str, v: str, workers: int) -> dict[str, Any]:
    return {
        "modelName": name,
        "modelVersion": v,
        "modelUrl": f"{name}.mar",
        "minWorkers": workers,
        "maxWorkers": workers,
        "batchSize": 1,
        "maxBatchDelay": 100,
        "workers": [
            {"id": str(9000 + i), "status": "READY", "pid": 1000 + i} for i in range(workers)
        ],
    }


class RecordingEngine:
    """TorchServe-shaped answers on one loopback port; `requests` records what came in."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.models: dict[str, dict[str, Any]] = {"mnist": version("mnist", "1.0", 1)}
        self.port = free_port()
        self.server: HTTPServer | None = None
        self.scheme = "http"
        self.info: dict[str, Any] = {}
        self.lifecycle: list[tuple[str, Any]] = []

    def start(self, ssl_options: ssl.SSLContext | None = None) -> None:
        """Listen on the port: https with `ssl_options`, else plain http."""
        engine = self
        self.scheme = "https" if ssl_options is not None else "http"

        class Base(tornado.web.RequestHandler):
            def prepare(self) -> None:
                engine.requests.append(
                    {
                        "method": self.request.method,
                        "uri": self.request.uri,
                        "headers": dict(self.request.headers),
                        "body": self.request.body,
                    }
                )
                is_mgmt = not self.request.path.startswith(
                    ("/predictions", "/explanations", "/v1", "/v2", "/ping")
                )
                if is_mgmt and self.request.path != "/metrics":
                    if self.request.headers.get("Authorization") != f"Bearer {MGMT_KEY}":
                        self.error(401, "InvalidKeyException", "Token Authorization failed.")

            def error(self, status: int, type_: str, message: str) -> None:
                self.set_status(status)
                self.finish({"code": status, "type": type_, "message": message})

            def model(self, name: str) -> dict[str, Any] | None:
                m = engine.models.get(name)
                if m is None:
                    self.error(404, "ModelNotFoundException", f"Model not found: {name}")
                return m

        class EngineStatus(Base):
            def get(self) -> None:
                self.finish(
                    {
                        "version": "0.1.0",
                        "pid": os.getpid(),
                        "uptime_s": 12.5,
                        "key_file": "/should/not/leak",
                        "gpus": [
                            {
                                "index": 0,
                                "name": "Fake GPU",
                                "memory_used": 1,
                                "memory_total": 2,
                                "utilization": 50,
                            }
                        ],
                    }
                )

        class Models(Base):
            def get(self) -> None:
                self.finish(
                    {
                        "models": [
                            {"modelName": n, "modelUrl": m["modelUrl"]}
                            for n, m in engine.models.items()
                        ]
                    }
                )

            def post(self) -> None:
                url = self.get_query_argument("url")
                name = url.removesuffix(".mar")
                engine.models[name] = version(
                    name, "1.0", int(self.get_query_argument("initial_workers", "1"))
                )
                self.finish(
                    {"status": f'Model "{name}" Version: 1.0 registered with 1 initial workers'}
                )

        class Model(Base):
            def get(self, name: str, v: str | None = None) -> None:
                m = self.model(name)
                if m is not None:
                    self.finish(json.dumps([m]))

            def put(self, name: str, v: str | None = None) -> None:
                m = self.model(name)
                if m is not None:
                    n = int(self.get_query_argument("min_worker"))
                    engine.models[name] = version(name, m["modelVersion"], n)
                    self.finish({"status": "Workers scaled to 1 for model: " + name})

            def delete(self, name: str, v: str | None = None) -> None:
                if self.model(name) is not None:
                    del engine.models[name]
                    self.finish({"status": f'Model "{name}" unregistered'})

        class All(Base):
            def get(self, name: str) -> None:
                m = self.model(name)
                if m is not None:
                    self.finish(json.dumps([m]))

        class SetDefault(Base):
            def put(self, name: str, v: str) -> None:
                if self.model(name) is not None:
                    self.finish(
                        {
                            "status": f'Default version successfully updated for model "{name}" to "{v}"'
                        }
                    )

        class Logs(Base):
            def get(self, name: str) -> None:
                if self.model(name) is not None:
                    self.set_header("Content-Type", "text/plain")
                    self.finish("line 1\nline 2\n")

        class Predict(Base):
            def post(self, rest: str) -> None:
                self.set_header("Content-Type", "application/json")
                self.set_header("X-Secret", "must-not-pass")
                if self.request.path.startswith("/explanations/"):  # as the built-ins answer
                    self.set_header("X-Explanation", '{"target":7,"prediction":7}')
                self.finish(
                    json.dumps(
                        {
                            "path": self.request.path,
                            "content_type": self.request.headers.get("Content-Type"),
                            "length": len(self.request.body),
                            # named, not echoed: a response carrying a key would look leaked
                            "authorization": (
                                "inference-key"
                                if self.request.headers.get("Authorization") == f"Bearer {INF_KEY}"
                                else self.request.headers.get("Authorization")
                            ),
                        }
                    )
                )

            put = post
            get = post

        class Metrics(Base):
            def get(self) -> None:
                self.set_header("Content-Type", "text/plain; version=0.0.4")
                self.finish(METRICS_TEXT)

        app = tornado.web.Application(
            [
                (r"/engine", EngineStatus),
                (r"/models", Models),
                (r"/models/([^/]+)/all", All),
                (r"/models/([^/]+)/logs", Logs),
                (r"/models/([^/]+)/([^/]+)/set-default", SetDefault),
                (r"/models/([^/]+)", Model),
                (r"/models/([^/]+)/([^/]+)", Model),
                (r"/((?:predictions|explanations|v1|v2|ping).*)", Predict),
                (r"/metrics", Metrics),
            ]
        )
        self.server = HTTPServer(app, ssl_options=ssl_options)
        self.server.listen(self.port, "127.0.0.1")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def write_discovery(
        self, runtime_dir: Path, log_dir: Path, certificate_file: Path | None = None
    ) -> Path:
        """A discovery file naming this process (alive) and a key file, as the engine writes;
        `certificate_file` is the one it names for https (the engine's own, or another)."""
        key_file = runtime_dir / "fake-keys.json"
        key_file.write_text(
            json.dumps(
                {
                    "management": {"key": MGMT_KEY, "expiration time": "never"},
                    "inference": {"key": INF_KEY, "expiration time": "never"},
                    "API": {"key": "api-SECRET"},
                }
            )
        )
        addr = f"{self.scheme}://127.0.0.1:{self.port}"
        info = {
            "pid": os.getpid(),
            "started": time.time(),
            "inference_address": addr,
            "management_address": addr,
            "metrics_address": addr,
            "model_store": str(log_dir),
            "key_file": str(key_file),
            "log_dir": str(log_dir),
            "version": "0.1.0",
        }
        if certificate_file is not None:
            info["certificate_file"] = str(certificate_file)
        self.info = info
        path = runtime_dir / f"jupyter-torchserve-{os.getpid()}.json"
        path.write_text(json.dumps(info))
        return path


async def predict(jp_fetch: Any, name: str, body: bytes, **kwargs: Any) -> Any:
    """The sidebar's test prediction: `POST {base}/torchserve/models/{name}/predict`."""
    kwargs.setdefault("headers", {"Content-Type": "image/png"})
    return await jp_fetch(
        "torchserve", "models", name, "predict", method="POST", body=body, **kwargs
    )


# ------------------------------------------------------------------------------ real engine
class RealEngine:
    """A real engine on free loopback ports with the digits classifier deployed as `mnist`.

    Its discovery file lives in `runtime_dir`; tests point `JUPYTER_RUNTIME_DIR` (or copy the
    file) there so the server extension finds it as a user's would.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runtime_dir = root / "runtime"
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        self.info: dict[str, Any] = {}
        self.png = b""
        self.model: Any = None  # the trained digits classifier, for tests that archive it again

    def start(self, *, deploy: bool = True, tls: tuple[Path, Path] | None = None) -> RealEngine:
        """Start it; with `tls` (key, certificate) all three ports serve https with them, as
        TorchServe's `private_key_file` / `certificate_file` say."""
        from jupyter_torchserve import launcher

        scheme = "https" if tls else "http"
        extra = {"private_key_file": str(tls[0]), "certificate_file": str(tls[1])} if tls else {}
        with _env(JUPYTER_RUNTIME_DIR=str(self.runtime_dir)):
            self.info = launcher.start_engine(
                inference_address=f"{scheme}://127.0.0.1:{free_port()}",
                management_address=f"{scheme}://127.0.0.1:{free_port()}",
                metrics_address=f"{scheme}://127.0.0.1:{free_port()}",
                model_store=str(self.root / "store"),
                state_dir=str(self.root / "state"),
                **extra,
            )
            if deploy:
                self.deploy_mnist()
        return self

    def deploy_mnist(self, model: Any = None) -> None:
        """Deploy the digits classifier as `mnist`: `model` if given (one trained already, the
        same `mnist.trained_model(epochs=3)`), else one trained here."""
        import jupyter_torchserve as jts
        from jupyter_torchserve.examples import mnist

        data = mnist.load_data()
        model = self.model = mnist.trained_model(epochs=3) if model is None else model
        self.png = mnist.png_bytes(mnist.digit_image(7, data))
        (self.root / "seven.png").write_bytes(self.png)
        labels = mnist.write_labels(self.root / "index_to_name.json")
        jts.deploy(
            model,
            name="mnist",
            handler="image_classifier",
            example=self.png,
            handler_config={"mean": list(mnist.MEAN), "std": list(mnist.STD)},
            extra_files={"index_to_name.json": str(labels)},
            progress="none",
        )

    def stop(self) -> None:
        from jupyter_torchserve import launcher

        if self.info:
            with _env(JUPYTER_RUNTIME_DIR=str(self.runtime_dir)):
                launcher.stop_engine(self.info)

    def management_key(self) -> str:
        return json.loads(Path(self.info["key_file"]).read_text())["management"]["key"]

    def copy_discovery_to(self, runtime_dir: Path) -> None:
        src = Path(self.info["discovery_file"])
        (Path(runtime_dir) / src.name).write_text(src.read_text())


class _env:
    """Set environment variables for a block (the engine inherits them)."""

    def __init__(self, **values: str) -> None:
        self.values = values
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for k, v in self.values.items():
            self.saved[k] = os.environ.get(k)
            os.environ[k] = v

    def __exit__(self, *exc: object) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def self_signed(
    folder: Path, common_name: str = "localhost", ip: str | None = None
) -> tuple[Path, Path]:
    """A fresh key and self-signed certificate (PEM) for `common_name`, and `ip` if given.
    Without one, the engine on 127.0.0.1 is not named in it: the gateway's pin must trust
    it anyway (the notebook's `Client` checks the name, so an engine it starts needs `ip`)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(common_name)]
                + ([x509.IPAddress(ipaddress.ip_address(ip))] if ip else [])
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    key_file, cert_file = folder / f"{common_name}-key.pem", folder / f"{common_name}-cert.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


def server_tls(key: Path, cert: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx
