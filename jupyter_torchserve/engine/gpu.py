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


class GpuAssigner:
    """Round-robin over the usable GPUs, engine-wide, like TorchServe's `nextGpu`."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._next = 0

    def assign(self, device_type: str | None) -> int | None:
        if self.count == 0 or device_type == "cpu":
            return None
        gpu = self._next % self.count
        self._next += 1
        return gpu
