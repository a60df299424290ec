"""GPU discovery and usage through NVML, without initialising CUDA in the engine.

The engine must never create a CUDA context: it would cost hundreds of MB per GPU and forked
workers would inherit a broken one. NVML (nvidia-ml-py) reads devices, memory and utilisation
from the driver instead. `CUDA_VISIBLE_DEVICES` is honoured so that indices match what
`torch.cuda` numbers inside a worker. Tests inject a device list with `JTS_FAKE_GPUS`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger("jupyter_torchserve.engine")


@dataclass
class GpuInfo:
    index: int  # the index a worker passes to torch.cuda (after CUDA_VISIBLE_DEVICES)
    name: str
    uuid: str
    memory_used: int
    memory_total: int
    utilization: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_nvml_ok: bool | None = None


def _nvml() -> Any | None:
    global _nvml_ok
    if _nvml_ok is False:
        return None
    try:
        import pynvml

        if not _nvml_ok:
            pynvml.nvmlInit()
            _nvml_ok = True
        return pynvml
    except Exception as e:  # noqa: BLE001 - no driver, no library: a CPU machine
        if _nvml_ok is None:
            log.info("no NVIDIA GPU found (%s)", e)
        _nvml_ok = False
        return None


def _visible_handles(nvml: Any) -> list[Any]:
    count = nvml.nvmlDeviceGetCount()
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return handles
    chosen = []
    for item in visible.split(","):
        item = item.strip()
        if not item:
            continue
        if item.isdigit():
            if int(item) < count:
                chosen.append(handles[int(item)])
        else:
            for h in handles:
                uuid = nvml.nvmlDeviceGetUUID(h)
                uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
                if uuid.startswith(item):
                    chosen.append(h)
    return chosen


def list_gpus() -> list[GpuInfo]:
    fake = os.environ.get("JTS_FAKE_GPUS")
    if fake:
        return [GpuInfo(**g) for g in json.loads(fake)]
    nvml = _nvml()
    if nvml is None:
        return []
    gpus = []
    for i, h in enumerate(_visible_handles(nvml)):
        mem = nvml.nvmlDeviceGetMemoryInfo(h)
        try:
            util = float(nvml.nvmlDeviceGetUtilizationRates(h).gpu)
        except Exception:  # noqa: BLE001 - not supported on every device (MIG)
            util = None
        name = nvml.nvmlDeviceGetName(h)
        uuid = nvml.nvmlDeviceGetUUID(h)
        gpus.append(
            GpuInfo(
                index=i,
                name=name.decode() if isinstance(name, bytes) else name,
                uuid=uuid.decode() if isinstance(uuid, bytes) else uuid,
                memory_used=int(mem.used),
                memory_total=int(mem.total),
                utilization=util,
            )
        )
    return gpus


def process_gpu_memory(pid: int) -> int | None:
    """GPU memory in bytes used by one process (a worker), or None when unknown."""
    nvml = _nvml()
    if nvml is None:
        return None
    total = 0
    found = False
    for h in _visible_handles(nvml):
        try:
            procs = nvml.nvmlDeviceGetComputeRunningProcesses(h)
        except Exception:  # noqa: BLE001
            continue
        for p in procs:
            if p.pid == pid and p.usedGpuMemory is not None:
                total += int(p.usedGpuMemory)
                found = True
    return total if found else None


#: A CUDA context and torch's allocator cost about this much per worker before any weight.
CUDA_CONTEXT_BYTES = 512 * 1024**2
MIB = 1024**2


def estimate_footprint(model_dir: str) -> int:
    """GPU bytes a worker of an archive needs before one has been measured: its unpacked
    files (weights dominate) plus a CUDA context."""
    total = 0
    for root, _dirs, files in os.walk(model_dir):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                continue
    return total + CUDA_CONTEXT_BYTES


class NoGpuRoom(Exception):
    """No usable GPU has the free memory a new worker needs (the engine answers 507)."""


class GpuAssigner:
    """Round-robin over the usable GPUs, engine-wide, like TorchServe's `nextGpu`, skipping
    devices without room for the worker (the GPU memory guard).

    Free memory is NVML's, less what workers placed here but not yet visible in NVML's
    per-process accounting will take (their footprint): a worker still loading has not
    allocated yet, and two starts at once must not both count the same free bytes.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._next = 0
        self.placed: dict[str, tuple[int, int, Any]] = {}  # worker id -> (gpu, bytes, pid())

    def assign(
        self,
        device_type: str | None,
        footprint: int = 0,
        worker_id: str | None = None,
        pid: Any = None,
    ) -> int | None:
        if self.count == 0 or device_type == "cpu":
            return None
        free = self.free_memory()
        order = [(self._next + i) % self.count for i in range(self.count)]
        for gpu in order:
            if free is None or free.get(gpu, 0) >= footprint:
                self._next = gpu + 1
                if worker_id is not None:
                    self.placed[worker_id] = (gpu, footprint, pid or (lambda: None))
                return gpu
        assert free is not None
        devices = ", ".join(f"cuda:{g} {free.get(g, 0) // MIB} MiB free" for g in sorted(order))
        raise NoGpuRoom(
            f"no GPU has room for another worker needing {footprint // MIB} MiB: {devices}"
        )

    def release(self, worker_id: str) -> None:
        self.placed.pop(worker_id, None)

    def free_memory(self) -> dict[int, int] | None:
        """Free bytes per usable GPU index; None when the devices cannot be read."""
        gpus = list_gpus()[: self.count]
        if not gpus:
            return None
        free = {g.index: g.memory_total - g.memory_used for g in gpus}
        for gpu, footprint, pid in self.placed.values():
            p = pid()
            if gpu in free and (not p or process_gpu_memory(p) is None):
                free[gpu] -= footprint
        return free
