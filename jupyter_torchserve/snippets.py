"""What a deploy shows: its summary, and ready-to-run snippets for every protocol.

Why apart from :mod:`.display`: the snippets are commands a user copies into a terminal, with
their own rules (quoting, where the token comes from, which payload file goes with which
route); the views module keeps to the engine's state. Takes a
:class:`~jupyter_torchserve.deployment.Deployment` by its fields only, so it imports nothing
that imports it.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .display import esc, html_table


def _q(text: str) -> str:
    """Single-quote for a POSIX shell."""
    return "'" + text.replace("'", "'\\''") + "'"


def _pin(dep: Any, url: str) -> tuple[str, str] | None:
    """(certificate file, a name it carries) when `url` is served with TLS, else None.

    The name is `engine.tls.grpc_pin`'s, the one our gRPC client checks: a `CN=localhost`
    certificate names no `127.0.0.1`, so the printed commands check that name instead of
    the address while they still dial the address the engine reports."""
    cert = dep.info.get("certificate_file")
    if not cert or urlsplit(url if "://" in url else "//" + url).scheme != "https":
        return None
    return cert, _pinned_name(cert)


def _pinned_name(cert: str) -> str:
    """`engine.tls.grpc_pin`'s name for the certificate file, parsed once per version of the
    file (every snippet of a deploy asks; an engine restarted with a new one is re-read)."""
    try:
        stamp = os.stat(cert).st_mtime_ns
    except OSError:
        stamp = None  # grpc_pin says what is wrong with the file
    return _pinned_name_of(cert, stamp)


@functools.lru_cache(maxsize=8)
def _pinned_name_of(cert: str, _stamp: int | None) -> str:  # the stamp keys the cache
    from .engine.tls import grpc_pin

    return grpc_pin(cert)[1]


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _curl(dep: Any, url: str) -> tuple[str, str]:
    """(curl's options, the URL to give it): `--cacert` with the engine's certificate as
    the one CA on https, and, where `_pin`'s name is not the URL's host, `--connect-to`,
    so curl checks that name while it still dials the engine's address (a certificate
    naming both gets the option too: harmless). Plain http: no options, the URL as is."""
    pin = _pin(dep, url)
    if pin is None:
        return "", url
    cert, name = pin
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    opts = f" --cacert {_q(cert)}"
    if name != host:
        opts += f" --connect-to {_netloc(name, port)}:{_netloc(host, port)}"
        url = parts._replace(netloc=_netloc(name, port)).geturl()
    return opts, url


def _requests(dep: Any, url: str) -> tuple[list[str], str, str]:
    """(lines that set up the pin, what to call `.post` on, its extra arguments) for
    Python requests: `verify=<certificate>` trusts that file alone (not certifi's CAs).
    Where `_pin`'s name is not the URL's host, requests has no `--connect-to`,
    so a session's adapter dials the address and checks the name the certificate carries
    (urllib3's `server_hostname`, public API): a user's own pasteable code, not a
    private class of ours, and the name is still checked as curl's is."""
    pin = _pin(dep, url)
    if pin is None:
        return [], "requests", ""
    cert, name = pin
    parts = urlsplit(url)
    verify = f", verify={cert!r}"
    if name == parts.hostname:
        return [], "requests", verify
    setup = [
        "from requests.adapters import HTTPAdapter",
        "",
        "",
        f"class Pinned(HTTPAdapter):  # the certificate names {name}, not {parts.hostname}",
        "    def init_poolmanager(self, *args, **kwargs):",
        f"        super().init_poolmanager(*args, **kwargs, server_hostname={name!r})",
        "",
        "",
        "s = requests.Session()",
        f"s.mount({f'https://{parts.netloc}/'!r}, Pinned())",
    ]
    return setup, "s", verify


def _inference_key_file(dep: Any) -> str | None:
    """The key file when the inference API asks for its key (inference_token_required)."""
    if dep.info.get("inference_token_required") and dep.info.get("key_file"):
        return str(dep.info["key_file"])
    return None


def _curl_auth(dep: Any, kind: str) -> str:
    """curl's Authorization header with `kind`'s key, read by the CLI when the command runs
    (the engine named by address: with several running, "the newest" may be another)."""
    where = shlex.quote(dep.management_address)
    which = "" if kind == "management" else f" --type {kind}"
    cli = f"{shlex.quote(sys.executable)} -m jupyter_torchserve token"
    return f' -H "Authorization: Bearer $({cli} --management-address {where}{which})"'


def deployment_snippets(dep: Any) -> dict[str, str]:
    """Ready-to-run commands for a :class:`~jupyter_torchserve.deployment.Deployment`.

    The example payloads were written into the model store by ``deploy``, so the curl lines
    run as they are (``!`` in a notebook cell, or a terminal). Where the management token is
    needed the command reads it when it runs (``jupyter_torchserve token``, with this
    kernel's Python, which need not be on PATH), instead of carrying the key itself: these
    lines are shown in cell outputs, and a key there would be saved into the notebook and
    shared with it.
    """
    ep = dep.endpoints
    raw = dep.payloads.get("raw")
    out: dict[str, str] = {}
    key_file = _inference_key_file(dep)
    iauth = _curl_auth(dep, "inference") if key_file else ""
    pin, url = _curl(dep, ep["predictions"])
    if raw and raw.endswith((".png", ".jpg")):
        out["curl"] = f"curl{pin}{iauth} -T {_q(raw)} {url}"
    elif raw:
        ctype = "application/json" if raw.endswith(".json") else "text/plain"
        body = f"-H 'Content-Type: {ctype}' --data-binary @{_q(raw)}"
        out["curl"] = f"curl{pin}{iauth} -X POST {url} {body}"
    for kind, key in (("v1", "kserve_v1"), ("v2", "kserve_v2")):
        path = dep.payloads.get(kind)
        if path:
            pin, url = _curl(dep, ep[key])
            body = f"-H 'Content-Type: application/json' -d @{_q(path)}"
            out[f"curl_{kind}"] = f"curl{pin}{iauth} -X POST {url} {body}"
    auth = _curl_auth(dep, "management") if dep.token else ""
    pin, mgmt = _curl(dep, f"{dep.management_address}/models/{dep.name}")
    out["curl_describe"] = f"curl{pin}{auth} {mgmt}"
    out["curl_scale"] = (
        f"curl{pin}{auth} -X PUT '{mgmt}/{dep.version}?min_worker=2&synchronous=true'"
    )
    pin, url = _curl(dep, ep["metrics"])
    out["curl_metrics"] = f"curl{pin} {url}"
    if raw:
        binary = not raw.endswith((".json", ".txt"))
        ctype = (
            "image/png"
            if raw.endswith(".png")
            else "application/json"
            if raw.endswith(".json")
            else "application/octet-stream"
        )
        setup, call, verify = _requests(dep, ep["predictions"])
        opening = f"    r = {call}.post("
        out["python"] = "\n".join(
            [
                "import requests",
                *_python_auth(key_file),
                *setup,
                f"with open({raw!r}, {'rb' if binary else 'r'!r}) as f:",
                f"{opening}{ep['predictions']!r}, data=f.read(),",
                f"{' ' * len(opening)}headers={{'Content-Type': {ctype!r}"
                f"{', **auth' if key_file else ''}}}{verify})",
                "print(r.status_code, r.json())",
            ]
        )
    if dep.payloads.get("v2"):
        setup, call, verify = _requests(dep, ep["kserve_v2"])
        headers = ", headers=auth" if key_file else ""
        out["python_v2"] = "\n".join(
            [
                "import json, requests",
                *_python_auth(key_file),
                *setup,
                f"payload = json.load(open({dep.payloads['v2']!r}))",
                f"print({call}.post({ep['kserve_v2']!r}, json=payload{headers}{verify}).json())",
            ]
        )
    out.update(_grpc_snippets(dep, raw))
    return out


def _python_auth(key_file: str | None) -> list[str]:
    """Lines that read the inference key from the engine's key file when the snippet runs
    (never printed into the notebook), as `auth` headers; none when no key is asked."""
    if key_file is None:
        return []
    return [
        "from jupyter_torchserve.discovery import read_keys",
        f"auth = {{'Authorization': 'Bearer ' + read_keys({key_file!r}).inference}}",
    ]


def _grpc_snippets(dep: Any, raw: str | None) -> dict[str, str]:
    """TorchServe's `Predictions` over gRPC, with our stubs and with grpcurl, when the engine
    serves gRPC. The stubs' package path is the one protoc's `-I` root gives, so grpcurl
    finds the same files. With `grpc_ssl`, both pin the engine's certificate as
    `Client.grpc()` does; plaintext engines get the insecure channel and `-plaintext`."""
    address = dep.info.get("grpc_inference_address")
    if not address or not raw:
        return {}
    version = "" if dep.is_default else dep.version
    key_file = _inference_key_file(dep)
    metadata = ""
    if key_file:
        metadata = f", metadata=[('authorization', 'Bearer ' + read_keys({key_file!r}).inference)]"
    cert = dep.info.get("certificate_file") if dep.info.get("grpc_ssl") else None
    if cert:  # pinned as `Client.grpc()` pins it: the one root, the name the certificate says
        name = _pinned_name(cert)
        channel = [
            f"credentials, name = pinned_credentials({cert!r})",
            f"channel = grpc.secure_channel({address!r}, credentials,",
            "                               options=[('grpc.ssl_target_name_override', name)])",
            "stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)",
        ]
        tls = f"-cacert {_q(cert)} -servername {_q(name)}"
    else:
        channel = [
            "stub = inference_pb2_grpc.InferenceAPIsServiceStub("
            f"grpc.insecure_channel({address!r}))"
        ]
        tls = "-plaintext"
    python = [
        "import grpc",
        "from jupyter_torchserve.discovery import read_keys" if metadata else "",
        "from jupyter_torchserve.grpc_client import pinned_credentials" if cert else "",
        "from jupyter_torchserve.protos.torchserve import inference_pb2, inference_pb2_grpc",
        *channel,
        f"with open({raw!r}, 'rb') as f:",
        "    request = inference_pb2.PredictionsRequest(",
        f"        model_name={dep.name!r}, model_version={version!r}, input={{'data': f.read()}})",
        f"print(stub.Predictions(request{metadata}).prediction.decode())",
    ]
    root = Path(__file__).resolve().parent.parent  # where `jupyter_torchserve/protos` lies
    # proto3 JSON writes bytes as base64: the shell puts the file's in at run time
    head = json.dumps({"model_name": dep.name, "model_version": version})[:-1]
    opening, closing = head + ', "input": {"data": "', '"}}'
    data = f'"$(base64 -w0 {_q(raw)})"'
    grpcurl = (
        f"grpcurl {tls}{_curl_auth(dep, 'inference') if key_file else ''}"
        f" -import-path {_q(str(root))} -import-path {_q(_googleapis())}"
        " -proto jupyter_torchserve/protos/torchserve/inference.proto"
        f" -d {_q(opening)}{data}{_q(closing)}"
        f" {address} org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"
    )
    return {"python_grpc": "\n".join(line for line in python if line), "grpcurl": grpcurl}


def _googleapis() -> str:
    """Where google/rpc/status.proto lies (googleapis-common-protos ships it)."""
    import google.rpc

    return str(Path(google.rpc.__path__[0]).parent.parent)


_SNIPPET_TITLES = {
    "curl": "TorchServe API",
    "curl_v1": "KServe v1",
    "curl_v2": "KServe v2 / Open Inference Protocol",
    "python": "Python requests",
    "python_v2": "Python requests, KServe v2",
    "python_grpc": "Python gRPC (TorchServe's Predictions, our stubs)",
    "grpcurl": "grpcurl (TorchServe's Predictions)",
    "curl_describe": "Describe (management, token)",
    "curl_scale": "Scale to 2 workers (management, token)",
    "curl_metrics": "Prometheus metrics",
}


def _summary_rows(dep: Any) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("model", f"{dep.name} {dep.version}" + (" (default)" if dep.is_default else "")),
        ("handler", dep.handler or "tensor"),
        ("archive", f"{dep.archive_path} ({dep.archive_format or '?'})"),
        ("workers", f"{dep.workers}, batch {dep.batch_size}, delay {dep.max_batch_delay} ms"),
    ]
    if dep.preflight_max_abs_diff is not None:
        rows.append(("pre-flight", f"max abs diff {dep.preflight_max_abs_diff:.3g}"))
    rows.append(("parity", str(dep.parity) if dep.parity else "not checked (no example)"))
    if dep.timings:
        rows.append(("took", ", ".join(f"{k} {v:.1f} s" for k, v in dep.timings.items())))
    for key in ("predictions", "kserve_v1", "kserve_v2", "kserve_v2_metadata", "management"):
        rows.append((key.replace("_", " "), dep.endpoints[key]))
    return rows


def deployment_html(dep: Any) -> str:
    ok = dep.parity is None or dep.parity.ok is not False
    colour = "#2e7d32" if ok else "#c62828"
    head = (
        f'<h4 style="color:{colour};margin:4px 0">Serving {esc(dep.name)} {esc(dep.version)}</h4>'
    )
    table = html_table(["", ""], _summary_rows(dep))
    snips = "".join(
        f"<div><b>{esc(_SNIPPET_TITLES.get(k, k))}</b><pre style='margin:2px 0 6px'>{esc(v)}</pre></div>"
        for k, v in dep.snippets.items()
    )
    return f"{head}{table}<details open><summary>Snippets</summary>{snips}</details>"


def deployment_text(dep: Any) -> str:
    lines = [f"Serving {dep.name} {dep.version}"]
    lines += [f"  {k:<20} {v}" for k, v in _summary_rows(dep)]
    for key, snippet in dep.snippets.items():
        lines.append(f"\n# {_SNIPPET_TITLES.get(key, key)}")
        lines.append(snippet)
    return "\n".join(lines)
