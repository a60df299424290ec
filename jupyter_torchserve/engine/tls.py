"""TLS for the engine's ports from TorchServe's keys: `private_key_file` and
`certificate_file` (PEM), or a PKCS12 `keystore` with `keystore_pass`, used for every
address that says `https://` and for gRPC's `enable_grpc_ssl`.

This is the one place that turns those keys into a server SSL context, so each listener (the
three HTTP ports here; gRPC's `enable_grpc_ssl` can read `pem_pair`) serves the same
certificate, and a config that asks for https without them fails at start with a clear line
instead of serving plain HTTP. `pinned_context` is the other side: what a client on this
machine (the server extension's gateway) trusts, the engine's own certificate and no other;
`grpc_pin` is the same pin in the terms a gRPC channel takes.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ..config import EngineConfig


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def is_https(address: str) -> bool:
    return urlsplit(address if "://" in address else "http://" + address).scheme == "https"


def keystore_to_pem(config: EngineConfig, folder: Path) -> None:
    """A `keystore` (TorchServe's other way to give the key) as the PEM pair every listener
    reads: written once at start into the engine's private `folder` (mode 0600), and named
    in `private_key_file` / `certificate_file`, so the HTTP ports, gRPC and our clients (the
    discovery file's `certificate_file`) all use the one certificate. A PEM pair given as
    well wins, as the more explicit setting."""
    if not config.keystore or (config.private_key_file and config.certificate_file):
        return
    if config.keystore_type.upper() != "PKCS12":
        raise SystemExit(
            f"keystore_type={config.keystore_type} is not read here, only PKCS12: convert it "
            "with `keytool -importkeystore -srckeystore KS -destkeystore ks.p12 "
            "-deststoretype PKCS12`, or give private_key_file and certificate_file (PEM)"
        )
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    try:
        data = Path(config.keystore).expanduser().read_bytes()
        key, cert, chain = pkcs12.load_key_and_certificates(
            data, config.keystore_pass.encode() or None
        )
    except (OSError, ValueError) as e:
        raise SystemExit(f"Cannot read the keystore {config.keystore}: {e}") from None
    if key is None or cert is None:
        raise SystemExit(f"The keystore {config.keystore} holds no private key and certificate")
    folder.mkdir(parents=True, exist_ok=True)
    key_file, cert_file = folder / "tls-key.pem", folder / "tls-cert.pem"
    for path, pem in (
        (
            key_file,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        ),
        (
            cert_file,
            b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [cert, *chain]),
        ),
    ):
        path.touch(mode=0o600)
        path.write_bytes(pem)
    config.private_key_file, config.certificate_file = str(key_file), str(cert_file)


def pem_pair(config: EngineConfig) -> tuple[bytes, bytes]:
    """(private key, certificate chain) as PEM bytes, read from TorchServe's two keys."""
    if not (config.private_key_file and config.certificate_file):
        raise SystemExit(
            "TLS (an https:// address, or enable_grpc_ssl) needs private_key_file and "
            "certificate_file (PEM files) or a PKCS12 keystore, as in TorchServe's "
            "config.properties"
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


def pinned_context(certificate_file: str) -> ssl.SSLContext:
    """A client context that trusts exactly the engine's own certificate, the first one of
    `certificate_file` (the discovery file names it), and no other.

    The trust store holds that one certificate, not a CA bundle, and may hold a leaf that is
    not self-signed (`VERIFY_X509_PARTIAL_CHAIN`): a server passes only with the engine's
    certificate, and so only with its private key. The name in the certificate is therefore
    not checked: TorchServe's self-signed certificates usually say `CN=localhost` or the
    host's name while clients dial the loopback address the engine reports, and a name
    check would add nothing to the pin. Dates and the signature still are checked.
    Raises ValueError (with the file named) when the file holds no readable certificate."""
    path, pem = _first_certificate(certificate_file)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED
    ctx.check_hostname = False
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        ctx.load_verify_locations(cadata=pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError) as e:
        raise ValueError(f"The engine's certificate file {path} cannot be read: {e}") from None
    return ctx


def grpc_pin(certificate_file: str) -> tuple[bytes, str]:
    """The same pin for a gRPC channel: (the engine's certificate as PEM, a name it carries).

    gRPC takes no SSL context: it trusts `root_certificates` and always checks the name,
    against `grpc.ssl_target_name_override` when set. So the name given is one the
    certificate itself says (its first DNS name, else its first IP address, else its CN):
    the check then passes by construction, as `pinned_context` skips it, and the pin alone
    decides (gRPC, too, accepts a pinned leaf that is not self-signed). Raises ValueError
    (with the file named) when the file cannot be read."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    path, pem = _first_certificate(certificate_file)
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as e:
        raise ValueError(f"The engine's certificate file {path} cannot be read: {e}") from None
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += san.get_values_for_type(x509.DNSName)
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    names += [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if not names:
        raise ValueError(f"The engine's certificate {path} names no host (no SAN, no CN)")
    name = names[0]
    if name.startswith("*."):  # a wildcard matches one label in its place, not a literal `*`
        name = "engine" + name[1:]
    return pem, name


def _first_certificate(certificate_file: str) -> tuple[Path, bytes]:
    """(the file's path, its first PEM certificate): the one certificate a client pins."""
    path = Path(certificate_file).expanduser()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"Cannot read the engine's certificate {path}: {e}") from None
    first = _PEM_CERT.search(data)
    if first is None:
        raise ValueError(f"The engine's certificate file {path} holds no PEM certificate")
    return path, first.group()
