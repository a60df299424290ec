"""Built-in ``object_detector`` handler: an image in, ``[{label: [x1, y1, x2, y2], "score": s}]`` out.

Images are decoded like ``image_classifier``'s. The model returns, per image, boxes, labels
and scores: a list of dicts (torchvision's detection models), one dict of batched lists, or
a ``(boxes, labels, scores)`` tuple. Detections below ``handler_config["threshold"]``
(default 0.5, TorchServe's) are dropped; labels go through ``index_to_name.json``.
"""

from __future__ import annotations

from typing import Any

import torch
from jts_base import ImageHandlerBase, prediction_error, request_payload


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    return list(value)


class ObjectDetector(ImageHandlerBase):
    """Thresholded detections per image."""

    def initialize(self, context: Any) -> None:
        super().initialize(context)
        self.threshold = float(self.handler_config.get("threshold", 0.5))

    def explain_handle(self, data_preprocess: Any, raw_data: list[Any]) -> list[Any]:
        raise prediction_error(
            "object detection has no built-in explanation: detections are not one class "
            "score to integrate toward (override explain_handle or get_insights)",
            501,
        )

    def preprocess(self, data: list[Any]) -> Any:
        if self.image_size is not None:
            return super().preprocess(data)
        # Without a fixed size the images may differ: detection models take a list of them.
        images = [self.decode_image(request_payload(row)) for row in data]
        self.request_sizes = [1] * len(images)
        return [image.to(self.device, self.input_dtype(0)) for image in images]

    def _call_model(self, model_input: Any) -> Any:
        if isinstance(model_input, list):
            return self.model(model_input)  # one argument: the list of images
        return super()._call_model(model_input)

    def _per_image(self, output: Any, count: int) -> list[tuple[list, list, list]]:
        """Normalise the model's output to ``[(boxes, labels, scores)]`` per image."""
        if isinstance(output, dict):
            output = (
                [output]
                if count == 1 and _is_single(output["boxes"])
                else [
                    {k: output[k][i] for k in ("boxes", "labels", "scores")} for i in range(count)
                ]
            )
        if isinstance(output, tuple) and len(output) == 3:
            boxes, labels, scores = output
            if count == 1 and _is_single(boxes):
                output = [{"boxes": boxes, "labels": labels, "scores": scores}]
            else:
                output = [
                    {"boxes": b, "labels": lab, "scores": s}
                    for b, lab, s in zip(boxes, labels, scores, strict=True)
                ]
        if not isinstance(output, list) or len(output) != count:
            raise ValueError(
                "a detection model must return boxes, labels and scores per image "
                "(a list of dicts, a dict of lists or a (boxes, labels, scores) tuple)"
            )
        return [
            (_as_list(o["boxes"]), _as_list(o["labels"]), _as_list(o["scores"])) for o in output
        ]

    def postprocess(self, output: Any) -> list[list[dict[str, Any]]]:
        results = []
        for boxes, labels, scores in self._per_image(output, len(self.request_sizes)):
            detections = []
            for box, label, score in zip(boxes, labels, scores, strict=True):
                if float(score) >= self.threshold:
                    name = self.label(int(label))
                    detections.append({name: [float(v) for v in box], "score": float(score)})
            results.append(detections)
        return results


def _is_single(boxes: Any) -> bool:
    """Whether ``boxes`` holds one image's boxes (``[K, 4]``) rather than a batch of them."""
    if isinstance(boxes, torch.Tensor):
        return boxes.dim() == 2
    return not boxes or (
        isinstance(boxes[0], (list, tuple))
        and len(boxes[0]) == 4
        and not isinstance(boxes[0][0], (list, tuple))
    )
