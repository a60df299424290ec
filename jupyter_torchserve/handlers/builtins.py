"""The built-in handler classes, importable in a notebook so users can subclass them:

    from jupyter_torchserve.handlers.builtins import ImageClassifier

    class TopOne(ImageClassifier):
        def postprocess(self, probs):
            return probs.argmax(1).tolist()

The built-in files are standalone modules: inside an archive they are `jts_base.py`,
`jts_tensor.py`, ... and import each other by those names, so that TorchServe serves them
without this package. Here they are loaded under the same names, which is also how the
archiver recognises a subclass and writes `from jts_tensor import TensorHandler` into the
captured handler.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

#: The built-in handlers whose request body is an image file (PNG, JPEG; their preprocessing
#: is ImageHandlerBase's): the notebook's example payloads and the bundles' curl lines go by it
IMAGE_HANDLERS = ("image_classifier", "image_segmenter", "object_detector")

_DIR = Path(__file__).resolve().parent / "builtin"


def _load(module_name: str, filename: str) -> ModuleType:
    path = _DIR / filename
    loaded = sys.modules.get(module_name)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == path:
        return loaded
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


_loader = _load("jts_model_loader", "jts_model_loader.py")
#: How an exported program reaches a device: the archiver's checks and the stand-in for
#: TorchServe's BaseHandler use the same code as the archives' own loader
load_exported = _loader.load_exported
move_exported = _loader.move_exported
_base = _load("jts_base", "jts_base.py")

JtsBaseHandler = _base.JtsBaseHandler
ImageHandlerBase = _base.ImageHandlerBase
TensorHandler = _load("jts_tensor", "tensor.py").TensorHandler
ImageClassifier = _load("jts_image_classifier", "image_classifier.py").ImageClassifier
ImageSegmenter = _load("jts_image_segmenter", "image_segmenter.py").ImageSegmenter
ObjectDetector = _load("jts_object_detector", "object_detector.py").ObjectDetector
TextClassifier = _load("jts_text_classifier", "text_classifier.py").TextClassifier

__all__ = [
    "JtsBaseHandler",
    "ImageHandlerBase",
    "TensorHandler",
    "ImageClassifier",
    "ImageSegmenter",
    "ObjectDetector",
    "TextClassifier",
]
