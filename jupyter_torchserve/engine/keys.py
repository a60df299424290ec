"""Token authorisation with TorchServe 0.11.1+'s key file layout.

`key_file.json` holds a management, an inference and an API key; clients send
`Authorization: Bearer <key>`. The file is written with mode 0600 so only its owner (the
notebook user) can read the keys, and removed when the engine stops.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import time
from pathlib import Path


class KeyStore:
    def __init__(self, path: Path, expiration_min: float = 0.0) -> None:
        self.path = path
        self.expiration_min = expiration_min
        self.keys: dict[str, tuple[str, float]] = {}
        for kind in ("management", "inference", "API"):
            self.regenerate(kind, write=False)
        self.write()

    def regenerate(self, kind: str, write: bool = True) -> None:
        expires = time.time() + self.expiration_min * 60 if self.expiration_min > 0 else 0.0
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
