"""TLS for the engine's ports from TorchServe's keys: `private_key_file` and
`certificate_file` (PEM), used for every address that says `https://`.

This is the one place that turns those keys into a server SSL context, so each listener (the
three HTTP ports here; gRPC's `enable_grpc_ssl` can read `pem_pair`) serves the same
certificate, and a config that asks for https without them fails at start with a clear line
instead of serving plain HTTP.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ..config import EngineConfig


def is_https(address: str) -> bool:
    return urlsplit(address if "://" in address else "http://" + address).scheme == "https"


def pem_pair(config: EngineConfig) -> tuple[bytes, bytes]:
    """(private key, certificate chain) as PEM bytes, read from TorchServe's two keys."""
    if not (config.private_key_file and config.certificate_file):
        raise SystemExit(
            "An https address needs private_key_file and certificate_file (PEM files), "
            "as in TorchServe's config.properties"
        )
    try:
        key = Path(config.private_key_file).expanduser().read_bytes()
        cert = Path(config.certificate_file).expanduser().read_bytes()
    except OSError as e:
        raise SystemExit(f"Cannot read the TLS key or certificate: {e}") from None
    return key, cert


def server_context(config: EngineConfig, address: str) -> ssl.SSLContext | None:
    """The SSL context `address` is served with, or None for plain http."""
    if not is_https(address):
        return None
    pem_pair(config)  # a clear message for a missing or unreadable file
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(
            str(Path(config.certificate_file).expanduser()),
            str(Path(config.private_key_file).expanduser()),
        )
    except (ssl.SSLError, OSError) as e:
        raise SystemExit(f"Cannot load the TLS key and certificate: {e}") from None
    return ctx
