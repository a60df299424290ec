"""`to="torchserve"`: the archive and a config.properties for a plain TorchServe command
line on one machine (TorchServe 0.12, or this package's `python -m
jupyter_torchserve.torchserve`): the served settings travel in the `model_snapshot`."""

from __future__ import annotations

from .bundle import Bundle
from .image import SERVING_KEYS
from .layout import BundleWriter, archive_file_name
from .options import ExportOptions
from .properties import model_snapshot, properties_text
from .samples import predictions_call
from .snapshot import ModelSnapshot

COMMAND = "torchserve --start --ncs --model-store model-store --ts-config config.properties"


def write(model: ModelSnapshot, writer: BundleWriter, opts: ExportOptions) -> Bundle:
    for v in model.versions:
        writer.copy(v.archive, f"model-store/{archive_file_name(model, v)}")
    keys = {
        **SERVING_KEYS,
        # one machine: everything on loopback, so no token is needed to keep it private
        "inference_address": "http://127.0.0.1:8080",
        "metrics_address": "http://127.0.0.1:8082",
        "install_py_dep_per_model": any(v.requirements for v in model.versions),
        "model_store": "model-store",
        "model_snapshot": model_snapshot(model),
    }
    writer.text(
        "config.properties",
        properties_text(keys, f"TorchServe config for {model.name}, from {model.source}."),
    )
    steps = [
        ("start it with TorchServe 0.12 (Java 17)", COMMAND),
        (
            "or with jupyter_torchserve's engine",
            "python -m jupyter_torchserve.torchserve " + COMMAND.removeprefix("torchserve "),
        ),
        (
            "call it",
            predictions_call(model, writer, f"http://127.0.0.1:8080/predictions/{model.name}"),
        ),
        ("stop it", "torchserve --stop   # or: python -m jupyter_torchserve.torchserve --stop"),
    ]
    return writer.bundle("torchserve", model, steps)
