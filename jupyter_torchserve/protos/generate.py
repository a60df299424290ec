"""Make the committed gRPC stubs from our .proto files: `python -m jupyter_torchserve.protos.generate`.

Needs grpcio-tools (a test dependency, not a run-time one). The include root is the
repository, so the stubs import each other as `jupyter_torchserve.protos...` and no
`sys.path` trick is needed; `google/rpc/status.proto` comes from googleapis-common-protos,
whose `google.rpc.status_pb2` the stubs then import.
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent.parent
PROTOS = sorted(p.relative_to(ROOT).as_posix() for p in PACKAGE_DIR.rglob("*.proto"))


def include_dirs() -> list[str]:
    import google.rpc
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    googleapis = Path(google.rpc.__path__[0]).parent.parent  # holds google/rpc/status.proto
    return [str(ROOT), str(well_known), str(googleapis)]


def protoc(*args: str) -> None:
    from grpc_tools import protoc as tool

    argv = ["grpc_tools.protoc", *(f"-I{d}" for d in include_dirs()), *args, *PROTOS]
    if tool.main(argv) != 0:
        raise SystemExit(f"protoc failed: {' '.join(argv)}")


def generate(out: Path = ROOT) -> None:
    """Write `*_pb2.py`, `*_pb2.pyi` and `*_pb2_grpc.py` beside each .proto (under `out`)."""
    protoc(f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}")


def descriptor_set(path: Path) -> None:
    """What protoc makes of the .proto files, as a FileDescriptorSet: the check's reference."""
    protoc(f"--descriptor_set_out={path}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
