"""The container image the KServe and T9k runtimes run: our engine behind TorchServe's
command line, so the runtimes call it exactly as they call a TorchServe image.

Written into a bundle's `image/` folder (the docker build context). Its defaults file
`config.properties` sits in the working directory, where TorchServe looks when no
`--ts-config` is given (T9k's runtime gives none; KServe's points at the model storage).
"""

from __future__ import annotations

from importlib.metadata import version

from .._version import __version__
from .layout import BundleWriter
from .properties import properties_text

#: The image's `torchserve`: TorchServe's command line, run by our engine (torchserve.py).
TORCHSERVE_SHIM = '#!/bin/sh\nexec python -m jupyter_torchserve.torchserve "$@"\n'
HOME = "/home/model-server"
DEFAULT_IMAGE = f"jupyter-torchserve:{__version__}"

#: Inference and metrics on every interface (the pod's port); management on loopback only,
#: without a token and with no model API: nothing outside the pod can change what it serves.
SERVING_KEYS: dict[str, object] = {
    "inference_address": "http://0.0.0.0:8080",
    "management_address": "http://127.0.0.1:8081",
    "metrics_address": "http://0.0.0.0:8082",
    "enable_envvars_config": True,
    "disable_token_authorization": True,
    "enable_model_api": False,
    "metrics_mode": "prometheus",
}


def dockerfile() -> str:
    torch_version = version("torch").split("+")[0]
    return f"""\
# The serving image: jupyter_torchserve's engine, started as `torchserve` (the command line
# KServe's and T9k's TorchServe runtimes use). CPU build.
# CUDA variant: start FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 (plus python3 and
# pip) and install torch from the matching CUDA index instead of .../whl/cpu; the engine
# reads GPUs through NVML and gives each worker one.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends tini \\
    && rm -rf /var/lib/apt/lists/*
ARG TORCH_SPEC="torch=={torch_version}"
# jupyter_torchserve from the package index, or a wheel you put into wheels/
# (pip wheel --no-deps -w image/wheels <checkout of jupyter_torchserve>)
ARG JTS_SPEC="jupyter_torchserve=={__version__}"
COPY wheels/ /tmp/wheels/
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "$TORCH_SPEC" \\
    && pip install --no-cache-dir --find-links /tmp/wheels "$JTS_SPEC" \\
    && rm -rf /tmp/wheels
COPY --chmod=755 torchserve /usr/local/bin/torchserve
RUN useradd --uid 1000 --create-home --home-dir {HOME} model-server \\
    && mkdir -p {HOME}/model-store && chown -R 1000:1000 {HOME}
COPY --chown=1000:1000 config.properties {HOME}/config.properties
USER 1000
WORKDIR {HOME}
ENV JUPYTER_DATA_DIR={HOME}/.local/share/jupyter \\
    JUPYTER_RUNTIME_DIR={HOME}/.local/share/jupyter/runtime
EXPOSE 8080 8081 8082
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["torchserve", "--start", "--foreground", "--model-store={HOME}/model-store"]
"""


def image_config() -> str:
    return properties_text(
        SERVING_KEYS,
        "Defaults of the jupyter_torchserve image, read when no --ts-config is given.\n"
        "With enable_envvars_config=true, TS_* variables override them (TorchServe's rule).",
    )


def write_image(writer: BundleWriter) -> None:
    writer.text("image/Dockerfile", dockerfile())
    writer.text("image/torchserve", TORCHSERVE_SHIM, mode=0o755)
    writer.text("image/config.properties", image_config())
    writer.text(
        "image/wheels/README.md",
        "Put a jupyter_torchserve wheel here if it is not on your package index.\n",
    )


def build_steps(image: str) -> tuple[str, str]:
    return (
        "build and push the serving image (once; any registry your cluster pulls from)",
        f"docker build -t {image} image/ && docker push {image}",
    )
