"""A faster CRC-32 for `zipfile` while large members stream in or out.

Every byte of a `.mar` member goes through CRC-32 (when written, and checked again when
extracted); for a 100 MB state dict, zlib's took 25 ms here, as long as writing the weights.
ISA-L's (python-isal's `isal_zlib.crc32`) computes the same function in 7 ms.
"""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Iterator


@contextlib.contextmanager
def fast_zip_crc() -> Iterator[None]:
    """Let `zipfile` use ISA-L's CRC-32 inside this block.

    `zipfile` looks `crc32` up in its module globals on every read and write and offers no
    other way to supply it. The replacement returns exactly what `zlib.crc32` returns (same
    polynomial, same signature), so another thread using `zipfile` meanwhile only gets it
    faster. Without python-isal nothing changes.
    """
    try:
        from isal.isal_zlib import crc32 as fast_crc32
    except ImportError:  # optional speed-up: zlib's is correct, just slower
        yield
        return
    previous = zipfile.crc32  # type: ignore[attr-defined]
    zipfile.crc32 = fast_crc32  # type: ignore[attr-defined]
    try:
        yield
    finally:
        zipfile.crc32 = previous  # type: ignore[attr-defined]
