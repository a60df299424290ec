"""What kind of bytes a body is, judged by its first bytes: the one content sniffer.

The client picks a request's Content-Type with it, the KServe v2 route decides whether a
BYTES element is base64 of binary data, and the notebook side tells an image example from a
tensor. Built-in handlers copied into archives keep their own check, since an archive may not
import this package.
"""

from __future__ import annotations

#: Leading bytes -> MIME type. Order does not matter: no signature is a prefix of another.
SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"\x93NUMPY", "application/x-npy"),
)

IMAGE_TYPES = frozenset(t for _, t in SIGNATURES if t.startswith("image/"))


def sniff(data: bytes | bytearray | memoryview) -> str | None:
    """The MIME type the leading bytes announce, or None when they announce none."""
    head = bytes(data[:8])
    for magic, mime in SIGNATURES:
        if head.startswith(magic):
            return mime
    return None


def is_image(data: object) -> bool:
    """True for bytes that start like a PNG, JPEG or GIF."""
    return isinstance(data, (bytes, bytearray, memoryview)) and sniff(data) in IMAGE_TYPES


def is_binary(data: bytes | bytearray | memoryview) -> bool:
    """True for an image or a ``.npy`` array: bytes that are not text."""
    return sniff(data) is not None


def guess_type(name: str, body: bytes) -> str:
    """A Content-Type for a body read from a file called ``name`` (may be empty)."""
    sniffed = sniff(body)
    if sniffed:
        return sniffed
    if name.endswith(".json"):
        return "application/json"
    if name.endswith((".txt", ".csv")):
        return "text/plain"
    return "application/octet-stream"
