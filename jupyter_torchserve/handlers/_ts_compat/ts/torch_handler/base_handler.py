"""``ts.torch_handler.base_handler`` (compat): TorchServe's BaseHandler semantics.

Loads the model exactly where TorchServe does (``modelFile`` + state dict, TorchScript, or a
``torch.export`` ``.pt2``), sets the same attributes (``model``, ``device``, ``map_location``,
``manifest``, ``mapping``, ``initialized``) and splits ``handle`` into preprocess ->
inference -> postprocess, so handlers that subclass it behave as under TorchServe.
"""

from __future__ import annotations

import abc
import importlib
import logging
import os
import time
from typing import Any

import torch

from ts.handler_utils.timer import timed
from ts.utils.util import list_classes_from_module, load_label_mapping

logger = logging.getLogger(__name__)


class BaseHandler(abc.ABC):  # noqa: B024 - abstract in name only, exactly like TorchServe's
    """Base default handler to load TorchScript or eager (state_dict) models."""

    def __init__(self) -> None:
        self.model: Any = None
        self.mapping: dict[str, str] | None = None
        self.device: torch.device | None = None
        self.initialized = False
        self.context: Any = None
        self.model_pt_path: str | None = None
        self.manifest: dict[str, Any] | None = None
        self.map_location: str | None = None
        self.explain = False
        self.target = 0
        self.profiler_args: dict[str, Any] = {}

    def initialize(self, context: Any) -> None:
        """Pick the device, load the model from the manifest's files, read index_to_name.json."""
        if context is not None and hasattr(context, "model_yaml_config"):
            self.model_yaml_config = context.model_yaml_config
        properties = context.system_properties
        if torch.cuda.is_available() and properties.get("gpu_id") is not None:
            self.map_location = "cuda"
            self.device = torch.device(f"cuda:{properties.get('gpu_id')}")
        else:
            self.map_location = "cpu"
            self.device = torch.device("cpu")
        self.manifest = context.manifest
        model_dir = properties.get("model_dir")
        model_info = (self.manifest or {}).get("model") or {}
        self.model_pt_path = None
        if "serializedFile" in model_info:
            self.model_pt_path = os.path.join(model_dir, model_info["serializedFile"])
        model_file = model_info.get("modelFile", "")
        if model_file:
            self.model = self._load_pickled_model(model_dir, model_file, self.model_pt_path)
            self.model.to(self.device)
            self.model.eval()
        elif self.model_pt_path and self.model_pt_path.endswith(".pt2"):
            from jupyter_torchserve.handlers.builtins import load_exported

            self.model = load_exported(self.model_pt_path, self.device)
        elif self.model_pt_path and self.model_pt_path.endswith((".pt", ".pth", ".torchscript")):
            self.model = self._load_torchscript_model(self.model_pt_path)
            self.model.eval()
        else:
            raise RuntimeError("No model weights could be loaded")
        self.mapping = load_label_mapping(os.path.join(model_dir, "index_to_name.json"))
        self.initialized = True

    def _load_torchscript_model(self, model_pt_path: str) -> Any:
        return torch.jit.load(model_pt_path, map_location=self.device)

    def _load_pickled_model(
        self, model_dir: str, model_file: str, model_pt_path: str | None
    ) -> Any:
        """Instantiate the one nn.Module class of ``model_file`` and load the state dict."""
        model_def_path = os.path.join(model_dir, model_file)
        if not os.path.isfile(model_def_path):
            raise RuntimeError("Missing the model.py file")
        module = importlib.import_module(model_file.split(".")[0])
        model_class_definitions = list_classes_from_module(module)
        if len(model_class_definitions) != 1:
            raise ValueError(
                f"Expected only one class as model definition. {model_class_definitions}"
            )
        model = model_class_definitions[0]()
        if model_pt_path:
            state_dict = torch.load(model_pt_path, map_location=self.device, weights_only=True)
            model.load_state_dict(state_dict)
        return model

    @timed
    def preprocess(self, data: Any) -> Any:
        return torch.as_tensor(data, device=self.device)

    @timed
    def inference(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode():
            marshalled_data = data.to(self.device)
            return self.model(marshalled_data, *args, **kwargs)

    @timed
    def postprocess(self, data: Any) -> Any:
        return data.tolist()

    def handle(self, data: list[Any], context: Any) -> Any:
        """preprocess -> inference -> postprocess, or explain/describe when the header asks."""
        start_time = time.time()
        self.context = context
        metrics = self.context.metrics
        if self._is_describe():
            output = [self.describe_handle()]
        else:
            data_preprocess = self.preprocess(data)
            if not self._is_explain():
                output = self.inference(data_preprocess)
                output = self.postprocess(output)
            else:
                output = self.explain_handle(data_preprocess, data)
        if metrics is not None:
            metrics.add_time("HandlerTime", round((time.time() - start_time) * 1000, 2), None, "ms")
        return output

    def explain_handle(self, data_preprocess: Any, raw_data: list[Any]) -> Any:
        """TorchServe's rule: the whole batch is explained against the first request's
        ``target`` (0 when it names none) by ``get_insights(data, inputs, target)``."""
        inputs = None
        target = 0
        row = raw_data[0]
        if isinstance(row, dict):
            inputs = row.get("data") or row.get("body")
            target = row.get("target") or 0
        return self.get_insights(data_preprocess, inputs, target)

    def get_insights(self, tensor_data: Any, _raw: Any = None, target: Any = 0) -> Any:
        """Captum's Integrated Gradients of the batch toward ``target``, one list per row.

        TorchServe's BaseHandler has no get_insights (its vision and text handlers do), so
        a handler explained there needs its own; here any BaseHandler subclass explains,
        the way TorchServe's VisionHandler does (zero baseline, 15 steps).
        """
        from captum.attr import IntegratedGradients

        if isinstance(target, (str, bytes)):
            target = int(target)

        def forward(x: torch.Tensor) -> torch.Tensor:
            output = self.model(x)
            output = output[0] if isinstance(output, (tuple, list)) else output
            return output.reshape(output.shape[0], -1)

        with torch.inference_mode(False), torch.enable_grad():
            attributions = IntegratedGradients(forward).attribute(
                tensor_data.detach().float(), target=int(target), n_steps=15
            )
        return attributions.tolist()

    def _is_explain(self) -> bool:
        if self.context and self.context.get_request_header(0, "explain"):
            if self.context.get_request_header(0, "explain") == "True":
                self.explain = True
                return True
        return False

    def _is_describe(self) -> bool:
        if self.context and self.context.get_request_header(0, "describe"):
            if self.context.get_request_header(0, "describe") == "True":
                return True
        return False

    def describe_handle(self) -> Any:
        """Customized describe handler: None unless a subclass says more."""
        return None

    def get_device(self) -> torch.device | None:
        return self.device
