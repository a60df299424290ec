"""``ts.torch_handler.image_classifier`` (compat): softmax top-k ``{label: probability}``."""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from ..utils.util import map_class_to_label
from .vision_handler import VisionHandler, pil_to_tensor

logger = logging.getLogger(__name__)

_IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
_IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def imagenet_processing(image: Image.Image) -> torch.Tensor:
    """Resize 256, centre-crop 224, to tensor, ImageNet normalisation (TorchServe's default)."""
    image = image.convert("RGB")
    width, height = image.size
    if width <= height:
        size = (256, max(1, int(256 * height / width)))
    else:
        size = (max(1, int(256 * width / height)), 256)
    image = image.resize(size, Image.BILINEAR)
    left, top = (size[0] - 224) // 2, (size[1] - 224) // 2
    image = image.crop((left, top, left + 224, top + 224))
    return (pil_to_tensor(image) - _IMAGENET_MEAN) / _IMAGENET_STD


class ImageClassifier(VisionHandler):
    """Image in, top-k ``{label: probability}`` out (labels from index_to_name.json)."""

    topk = 5
    image_processing: Any = staticmethod(imagenet_processing)

    def initialize(self, context: Any) -> None:
        super().initialize(context)
        if self.mapping is None:
            logger.warning(
                "index_to_name.json is missing from the archive: answers name classes by index"
            )

    def set_max_result_classes(self, topk: int) -> None:
        self.topk = topk

    def get_max_result_classes(self) -> int:
        return self.topk

    def postprocess(self, data: torch.Tensor) -> list[dict[str, float]]:
        ps = F.softmax(data, dim=1)
        probs, classes = torch.topk(ps, min(self.topk, ps.shape[1]), dim=1)
        return map_class_to_label(probs.tolist(), self.mapping, classes.tolist())
