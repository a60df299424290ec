"""Built-in ``image_segmenter`` handler: an image in, the per-pixel class (argmax) out.

Images are decoded like ``image_classifier``'s. The model returns ``[N, C, H, W]`` scores (or
a dict with ``out``, like torchvision's segmentation models); each response is the ``[H, W]``
nested list of class indices. An explanation integrates toward one class's score summed
over all pixels (``target``: a class index; default the class with the largest total).
"""

from __future__ import annotations

from typing import Any

import torch
from jts_base import ImageHandlerBase, first_tensor


class ImageSegmenter(ImageHandlerBase):
    """Per-pixel argmax over the class dimension."""

    def postprocess(self, output: Any) -> list[Any]:
        scores = first_tensor(output).detach().cpu()
        if scores.dim() != 4:
            raise ValueError(
                f"a segmentation model must return [N, C, H, W], got {list(scores.shape)}"
            )
        return scores.argmax(dim=1).tolist()

    def explained_outputs(self, output: torch.Tensor) -> torch.Tensor:
        if output.dim() != 4:
            raise ValueError(
                f"a segmentation model must return [N, C, H, W], got {list(output.shape)}"
            )
        return output.sum(dim=(2, 3))
