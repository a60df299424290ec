#!/usr/bin/env bash
# Prove the GPU paths on a lent NVIDIA machine in one call (issue 2 §5): worker GPU
# assignment, CUDA inference in a worker, NVML readings in status/metrics, and an engine
# that never creates a CUDA context; and issue 19's memory guard: a real CUDA OOM in a
# handler is answered 507 "Out of resources" while the worker serves on, and a scale-up
# that does not fit on the device is refused (507) and rolled back; and that archives move
# between devices: made on the CPU and served on a GPU worker, made on the GPU and served on
# either, deployed from the GPU with its parity check (tests/test_gpu_devices.py). The
# CPU-only suite covers the same paths with injected devices and the meta device; this runs
# tests/test_gpu.py, tests/test_gpu_memory.py and tests/test_gpu_devices.py, which skip where
# NVML finds no GPU.
#
# Here, once (the device machine cannot reach a package index; its python3 3.12 has torch,
# psutil, requests, prometheus-client, nvidia-ml-py and pytest but not the rest the engine
# imports; grpcio and protobuf travel at the versions the committed stubs were made for):
#   scripts/gpu-check.sh --prepare          # downloads the missing wheels into .whl/
# Then with the device tool: run(command="bash scripts/gpu-check.sh", carry=[".whl"])
# The log comes back as $OUT/gpu-check.log.
set -uo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
missing=(tornado httptools traitlets jupyter_core platformdirs googleapis-common-protos
    grpcio==1.81.1 protobuf==6.33.5)

if [ "${1:-}" = "--prepare" ]; then
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "${missing[@]}"
    ls .whl
    exit 0
fi

out="${OUT:-/tmp/gpu-check}"
mkdir -p "$out"
log="$out/gpu-check.log"
{
    nvidia-smi || true
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$repo_root"
    export PYTHONUNBUFFERED=1
    tmp="$(mktemp -d)"
    export JUPYTER_RUNTIME_DIR="$tmp/runtime" JUPYTER_DATA_DIR="$tmp/data"
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    # --noconftest: conftest.py loads pytest-jupyter, which this machine lacks and these
    # tests do not use (the Jupyter dirs are set above instead)
    python3 -m pytest --noconftest -p no:cacheprovider -v -s -rs --timeout 240 \
        tests/test_gpu_devices.py tests/test_gpu.py tests/test_gpu_memory.py
    nvidia-smi --query-gpu=index,memory.used,memory.total --format=csv || true
} 2>&1 | tee "$log"
