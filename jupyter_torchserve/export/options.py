"""The knobs of an export, checked once here so every target can trust them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .snapshot import ExportError

TARGETS = ("kserve", "t9k", "ray", "torchserve")
PROTOCOLS = ("v1", "v2", "grpc-v2")

#: distribution/reference's grammar: [registry[:port]/]path[:tag][@digest], the path in
#: lower case. A name outside it makes every pod fail with InvalidImageName, after the apply.
_HOST = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE = re.compile(
    rf"(?:{_HOST}(?:\.{_HOST})*(?::[0-9]+)?/)?{_PATH}(?:/{_PATH})*"
    rf"(?::\w[\w.-]{{0,127}})?(?:@{_DIGEST})?",
    re.ASCII,
)


@dataclass
class ExportOptions:
    protocol: str = "v1"  # KServe's protocolVersion
    gpu: int = 0  # GPUs per replica (pod or Ray replica)
    min_replicas: int | None = None
    max_replicas: int | None = None
    image: str | None = None  # the serving image the runtimes name
    storage_uri: str | None = None  # KServe storageUri / T9k modelUri of the copied bundle
    archive_dir: str | None = None  # Ray: where the cluster's nodes find the archive

    def check(self) -> ExportOptions:
        if self.protocol not in PROTOCOLS:
            raise ExportError(
                f"protocol must be one of {', '.join(PROTOCOLS)}, not {self.protocol!r}"
            )
        if self.gpu < 0:
            raise ExportError("gpu cannot be negative")
        for name in ("min_replicas", "max_replicas"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ExportError(f"{name} cannot be negative")
        if self.image is not None and not IMAGE_REFERENCE.fullmatch(self.image):
            raise ExportError(
                f"image {self.image!r} is not an image reference "
                "([registry[:port]/]path[:tag][@digest], the path in lower case)"
            )
        lo, hi = self.min_replicas, self.max_replicas
        if lo is not None and hi is not None and hi < lo:
            raise ExportError(f"max_replicas ({hi}) is less than min_replicas ({lo})")
        return self


def check_ray_flags(to: str, run: bool, ray_address: str | None, serve_port: int | None) -> None:
    """The magic's and the CLI's Ray-only flags, refused for other targets before anything
    is written (export() itself ignores an address or port it has no use for)."""
    if to == "ray":
        return
    for flag, value in (
        ("--run", run),
        ("--ray-address", ray_address),
        ("--serve-port", serve_port),
    ):
        if value:
            raise ExportError(
                f"{flag} is for --to ray only; a {to} bundle is applied with the "
                "commands in its README"
            )
