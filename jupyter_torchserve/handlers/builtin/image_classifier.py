"""Built-in ``image_classifier`` handler: an image in, top-k ``{label: probability}`` out.

PIL decodes bytes or base64 text (a float nested list ``[C, H, W]`` is taken as already
preprocessed); colour mode and size come from the schema, normalisation from
``handler_config`` (``mean``/``std``; without them pixels are scaled to [0, 1] like
torchvision's ``ToTensor``). ``topk`` (default 5) and ``apply_softmax`` (default true) are
read from ``handler_config``; labels from ``index_to_name.json``, else the class index.
An explanation is Captum's Integrated Gradients toward the predicted class or the request's
``target`` (``JtsBaseHandler.explain_handle``): the bare ``[C][H][W]`` attribution list, as
TorchServe's vision handler answers.
"""

from __future__ import annotations

from typing import Any

import torch
from jts_base import ImageHandlerBase, first_tensor


class ImageClassifier(ImageHandlerBase):
    """Softmax top-k classification of a batch of images."""

    def initialize(self, context: Any) -> None:
        super().initialize(context)
        self.topk = int(self.handler_config.get("topk", 5))
        self.apply_softmax = bool(self.handler_config.get("apply_softmax", True))

    def class_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        return torch.softmax(scores, dim=1) if self.apply_softmax else scores

    def postprocess(self, output: Any) -> list[dict[str, float]]:
        logits = first_tensor(output).detach().float().cpu()
        probs = self.class_probabilities(logits.reshape(logits.shape[0], -1))
        k = max(1, min(self.topk, probs.shape[1]))
        values, classes = torch.topk(probs, k, dim=1)
        return [
            {self.label(c): p for c, p in zip(row_classes, row_values, strict=True)}
            for row_classes, row_values in zip(classes.tolist(), values.tolist(), strict=True)
        ]
