"""Token authorisation with TorchServe 0.11.1+'s key file layout.

`key_file.json` holds a management, an inference and an API key; clients send
`Authorization: Bearer <key>`. The file is written with mode 0600 so only its owner (the
notebook user) can read the keys, and removed when the engine stops.

The management API always needs its key (unless token auth is off). The inference API
needs its key when `inference_token_required` is set (a TorchServe config.properties with
token auth on sets it, as TorchServe requires the inference key then) or when it listens
beyond loopback; only the notebook's default, inference on 127.0.0.1, is open.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import EngineConfig


def inference_needs_key(config: EngineConfig) -> bool:
    if config.disable_token_authorization:
        return False
    return config.inference_token_required or not _loopback(config.inference_address)


def _loopback(address: str) -> bool:
    from ..config import split_address

    host = split_address(address)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


class KeyStore:
    def __init__(self, path: Path, expiration_min: float = 0.0) -> None:
        self.path = path
        self.expiration_min = expiration_min
        self.keys: dict[str, tuple[str, float]] = {}
        for kind in ("management", "inference", "API"):
            self.regenerate(kind, write=False)
        self.write()

    def regenerate(self, kind: str, write: bool = True) -> None:
        # the API key (the one that makes new keys) does not expire, as in TorchServe
        timed = self.expiration_min > 0 and kind != "API"
        expires = time.time() + self.expiration_min * 60 if timed else 0.0
        self.keys[kind] = (secrets.token_urlsafe(24), expires)
        if write:
            self.write()

    def write(self) -> None:
        data: dict[str, dict[str, str]] = {}
        for kind, (key, expires) in self.keys.items():
            entry = {"key": key}
            if kind != "API":
                entry["expiration time"] = (
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
                    if expires
                    else "never"
                )
            data[kind] = entry
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, self.path)

    def check(self, kind: str, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        key, expires = self.keys[kind]
        if expires and time.time() > expires:
            return False
        # bytes: compare_digest refuses str with non-ASCII characters (TypeError, a 500)
        given = authorization[7:].strip().encode("utf-8", "replace")
        return hmac.compare_digest(given, key.encode())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
