"""``ts.utils.util`` (compat): label mapping, class discovery, YAML config, PredictionException."""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import os
from types import ModuleType
from typing import Any

logger = logging.getLogger(__name__)


def list_classes_from_module(module: ModuleType, parent_class: type | None = None) -> list[type]:
    """Classes defined in ``module`` itself (not imported into it), optionally filtered."""
    classes = [
        member
        for _, member in inspect.getmembers(module, inspect.isclass)
        if member.__module__ == module.__name__
    ]
    if parent_class is not None:
        return [c for c in classes if issubclass(c, parent_class)]
    return classes


def load_label_mapping(mapping_file_path: str) -> dict[str, str] | None:
    """Read ``index_to_name.json`` (``{"0": "cat"}``, ImageNet's lists, or object_type_names)."""
    if not os.path.isfile(mapping_file_path):
        # debug, not a warning: most handlers never name classes; the ones that do
        # (ImageClassifier) say it themselves, once, where it changes their answer
        logger.debug("%r is missing: class names come from their indices", mapping_file_path)
        return None
    with open(mapping_file_path, encoding="utf-8") as f:
        mapping = json.load(f)
    if not isinstance(mapping, dict):
        raise Exception('index->name JSON mapping should be in "class": "label" format.')
    names = mapping.get("object_type_names")
    if isinstance(names, list):
        return {str(k): v for k, v in enumerate(names)}
    for key, value in list(mapping.items()):
        label = value[-1] if isinstance(value, list) else value
        if not isinstance(label, str):
            raise Exception("labels in index->name mapping must be either str or List[str]")
        mapping[key] = label
    return mapping


def map_class_to_label(
    probs: list[list[float]], mapping: dict[str, str] | None = None, lbl_classes: Any = None
) -> list[dict[str, float]]:
    """Rows of probabilities (and class indices) -> ``[{label: probability}, ...]``."""
    if not isinstance(probs, list):
        raise Exception("Convert classes to list before doing mapping")
    if mapping is not None and not isinstance(mapping, dict):
        raise Exception("Mapping must be a dict")
    if lbl_classes is None:
        lbl_classes = itertools.repeat(range(len(probs[0])), len(probs))
    return [
        {
            (mapping[str(c)] if mapping is not None else str(c)): p
            for c, p in zip(classes, row, strict=False)
        }
        for classes, row in zip(lbl_classes, probs, strict=False)
    ]


def get_yaml_config(yaml_file_path: str) -> dict[str, Any]:
    """Parse a model-config YAML file (needs PyYAML, like TorchServe)."""
    import yaml

    with open(yaml_file_path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


class PredictionException(Exception):
    """Raised by a handler to answer the whole batch with ``error_code`` and ``message``."""

    def __init__(self, message: str, error_code: int = 500) -> None:
        self.message = message
        self.error_code = error_code
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message} : {self.error_code}"
