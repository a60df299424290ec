"""Out of memory in a handler: telling it apart, saying it clearly, and recovering from it.

TorchServe answers 507 "Out of resources" when a handler raises `MemoryError` or any error
whose text says "CUDA". We answer 507 for what is really out of memory, and say so in a way
a user can act on: which device, which model, and torch's own first line ("Tried to
allocate 2.00 GiB..."). The worker survives it: torch frees what the failed batch held as
its exception unwinds, and `release_cuda_cache` gives the allocator's cached blocks back so
the next batch, or another worker on the device, has room.

This module never imports torch: an ONNX worker runs without it, and a worker that has not
loaded torch cannot have hit torch's out-of-memory error.
"""

from __future__ import annotations

import sys

#: What CUDA, cuBLAS and cuDNN say when an allocation fails (torch before 1.13 raised a
#: plain RuntimeError with the first; the runtime and the libraries, the others).
CUDA_OOM_TEXTS = (
    "CUDA out of memory",
    "CUDA error: out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
)
MESSAGE_LIMIT = 300


def is_cuda_oom(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError (a RuntimeError, constructible without a GPU), or an
    error whose text is CUDA's out-of-memory wording."""
    torch = sys.modules.get("torch")
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if isinstance(oom_type, type) and isinstance(exc, oom_type):
        return True
    text = str(exc)
    return any(t in text for t in CUDA_OOM_TEXTS)


def oom_message(exc: BaseException, model: str | None, gpu_id: int | None, batch: int) -> str:
    """TorchServe's "Out of resources", then what ran out, where, and torch's first line."""
    first = (str(exc).strip().splitlines() or [""])[0][:MESSAGE_LIMIT]
    where = f"cuda:{gpu_id}" if gpu_id is not None else "the GPU"
    return (
        f"Out of resources: CUDA out of memory on {where} while model {model or '?'} ran a "
        f"batch of {batch} ({type(exc).__name__}: {first}). A smaller batch_size, fewer "
        "workers on that device, or a larger GPU would fit"
    )


def release_cuda_cache() -> None:
    """Give torch's cached GPU blocks back to the driver after an out-of-memory error."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        if cuda is not None and cuda.is_initialized():
            cuda.empty_cache()
    except Exception:  # noqa: BLE001 - a broken context: the next batch will tell
        pass
