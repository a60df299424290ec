"""``ts.torch_handler.vision_handler`` (compat): image requests -> a batch tensor, PIL only."""

from __future__ import annotations

import base64
import inspect
import io
from abc import ABC
from typing import Any

import torch
from PIL import Image

from ts.handler_utils.timer import timed

from .base_handler import BaseHandler


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """torchvision's ``ToTensor`` for PIL images: ``[C, H, W]`` float in [0, 1]."""
    import numpy as np

    array = np.asarray(image, dtype=np.float32)
    if image.mode in ("I", "I;16", "F"):
        scale = 1.0
    else:
        scale = 255.0
    array = array / scale
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


class VisionHandler(BaseHandler, ABC):
    """Base class for the vision handlers: decodes bytes/base64/lists, then image_processing."""

    #: Any callable PIL image -> tensor; subclasses set their own (e.g. MNIST's normalisation).
    image_processing: Any = staticmethod(pil_to_tensor)

    def initialize(self, context: Any) -> None:
        super().initialize(context)
        # TorchServe imports Captum with this module (and fails without it); here only
        # explanations need it. Handlers written for TorchServe call ``self.ig`` directly.
        try:
            from captum.attr import IntegratedGradients
        except ImportError:
            self.ig = None
        else:
            self.ig = IntegratedGradients(self.model)
        self.initialized = True
        if not context.system_properties.get("limit_max_image_pixels"):
            Image.MAX_IMAGE_PIXELS = None

    def _image_processing(self) -> Any:
        """The subclass's ``image_processing`` as a one-argument callable.

        TorchServe handlers assign a torchvision ``Compose`` object; a plain function assigned
        in the class body would otherwise be bound as a method and receive ``self``.
        """
        for klass in type(self).__mro__:
            if "image_processing" in vars(klass):
                raw = vars(klass)["image_processing"]
                break
        else:
            return pil_to_tensor
        if "image_processing" in vars(self):
            return vars(self)["image_processing"]
        if isinstance(raw, staticmethod):
            return raw.__func__
        if inspect.isfunction(raw):
            params = [
                p
                for p in inspect.signature(raw).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            return raw.__get__(self) if len(params) >= 2 else raw
        return raw

    @timed
    def preprocess(self, data: list[Any]) -> torch.Tensor:
        processing = self._image_processing()
        images = []
        for row in data:
            image = row.get("data") or row.get("body")
            if isinstance(image, str):
                image = base64.b64decode(image)
            if isinstance(image, (bytearray, bytes)):
                image = Image.open(io.BytesIO(image))
                image = processing(image)
                if not isinstance(image, torch.Tensor):
                    image = pil_to_tensor(image)
            else:
                image = torch.FloatTensor(image)
            images.append(image)
        return torch.stack(images).to(self.device)

    def get_insights(self, tensor_data: torch.Tensor, _: Any, target: Any = 0) -> Any:
        """TorchServe's: Integrated Gradients toward ``target`` in 15 steps, one list per row."""
        if self.ig is None:
            raise RuntimeError("explanations need Captum: run `pip install captum` here")
        if isinstance(target, (str, bytes)):
            target = int(target)
        with torch.inference_mode(False), torch.enable_grad():
            return self.ig.attribute(tensor_data, target=target, n_steps=15).tolist()
