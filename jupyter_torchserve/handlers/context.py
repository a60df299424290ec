"""A TorchServe-compatible ``Context`` (what ``ts.context.Context`` is inside our workers).

Handlers written for TorchServe read ``context.manifest``, ``context.system_properties`` and
the per-request header/response API; this class offers the same names and behaviour, so those
handlers run unchanged. It adds two things the worker needs: a real metrics cache by default,
and ``_send_intermediate``, the hook through which streamed (intermediate) responses leave.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from .metrics import MetricsCache

logger = logging.getLogger(__name__)

#: The TorchServe version our runtime imitates (``system_properties["server_version"]``).
TS_COMPAT_VERSION = "0.12.0"

IntermediateHook = Callable[[list[Any], dict[int, str], str, int], None]


def read_model_yaml_config(model_dir: str, manifest: dict[str, Any] | None) -> dict[str, Any]:
    """Load the archive's ``configFile`` YAML as TorchServe does, or ``{}``.

    PyYAML is optional for us (TorchServe itself needs it): without it a configured YAML file
    cannot be honoured, so we say so loudly instead of silently ignoring the user's settings.
    """
    model = (manifest or {}).get("model") or {}
    config_file = model.get("configFile")
    if not config_file:
        return {}
    path = os.path.join(model_dir, config_file)
    if not os.path.isfile(path):
        logger.warning("model config file %r named in the manifest is missing", config_file)
        return {}
    try:
        import yaml
    except ImportError:
        logger.warning(
            "PyYAML is not installed, so the model config file %r is ignored "
            "(context.model_yaml_config is {}); `pip install pyyaml` to use it",
            config_file,
        )
        return {}
    with open(path, encoding="utf-8") as f:
        loaded = yaml.safe_load(f)
    return loaded if isinstance(loaded, dict) else {}


class RequestProcessor:
    """Per-request headers in, response status/headers out (TorchServe's RequestProcessor)."""

    def __init__(self, request_header: dict[str, Any]) -> None:
        self._status_code: int = 200
        self._reason_phrase: str | None = None
        self._response_header: dict[str, str] = {}
        self._request_header = request_header

    def get_request_property(self, key: str) -> Any:
        value = self._request_header.get(key)
        if value is None and isinstance(key, str):
            value = self._request_header.get(key.lower())
        return value

    def get_request_properties(self) -> dict[str, Any]:
        return self._request_header

    def report_status(self, code: int, reason_phrase: str | None = None) -> None:
        self._status_code = code
        self._reason_phrase = reason_phrase

    def get_response_status_code(self) -> int:
        return self._status_code

    def get_response_status_phrase(self) -> str | None:
        return self._reason_phrase

    def add_response_property(self, key: str, value: str) -> None:
        self._response_header[key] = value

    def get_response_headers(self) -> dict[str, str]:
        return self._response_header

    def get_response_header(self, key: str) -> str | None:
        return self._response_header.get(key)


class Context:
    """Model and per-batch request information handed to ``initialize`` and ``handle``."""

    def __init__(
        self,
        model_name: str,
        model_dir: str,
        manifest: dict[str, Any] | None,
        batch_size: int,
        gpu: int | None,
        mms_version: str = TS_COMPAT_VERSION,
        limit_max_image_pixels: bool = True,
        metrics: Any = None,
        model_yaml_config: dict[str, Any] | None = None,
    ) -> None:
        self.model_name = model_name
        self.manifest = manifest
        self._system_properties: dict[str, Any] = {
            "model_dir": model_dir,
            "gpu_id": gpu,
            "batch_size": batch_size,
            "server_name": "MMS",
            "server_version": mms_version,
            "limit_max_image_pixels": limit_max_image_pixels,
        }
        self.request_ids: dict[int, str] | None = None
        self._request_processor: list[RequestProcessor] | None = None
        self._metrics: Any = None
        self.metrics = metrics if metrics is not None else MetricsCache(model_name)
        if model_yaml_config is None:
            model_yaml_config = read_model_yaml_config(model_dir, manifest)
        self.model_yaml_config: dict[str, Any] = model_yaml_config
        # TorchServe streams through a socket here; ours goes through _send_intermediate.
        self.cl_socket = None
        self._send_intermediate: IntermediateHook | None = None

    @property
    def system_properties(self) -> dict[str, Any]:
        return self._system_properties

    @property
    def request_processor(self) -> list[RequestProcessor] | None:
        return self._request_processor

    @request_processor.setter
    def request_processor(self, request_processor: list[RequestProcessor] | None) -> None:
        self._request_processor = request_processor

    @property
    def metrics(self) -> Any:
        return self._metrics

    @metrics.setter
    def metrics(self, metrics: Any) -> None:
        self._metrics = metrics

    def _processor(self, idx: int) -> RequestProcessor:
        if self._request_processor is None:
            raise RuntimeError("no request is being handled: the request API needs a batch")
        return self._request_processor[idx]

    def get_request_id(self, idx: int = 0) -> str | None:
        if self.request_ids is None:
            return None
        return self.request_ids.get(idx)

    def get_request_header(self, idx: int, key: str) -> Any:
        return self._processor(idx).get_request_property(key)

    def get_all_request_header(self, idx: int) -> dict[str, Any]:
        return self._processor(idx).get_request_properties()

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.set_response_header(idx, "content-type", value)

    def get_response_content_type(self, idx: int) -> str | None:
        headers = self.get_response_headers(idx)
        for key, value in headers.items():
            if key.lower() == "content-type":
                return value
        return None

    def get_response_status(self, idx: int) -> tuple[int, str | None]:
        processor = self._processor(idx)
        return processor.get_response_status_code(), processor.get_response_status_phrase()

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        if self._request_processor is not None and self._request_processor[idx] is not None:
            self._request_processor[idx].report_status(code, reason_phrase=phrase)

    def set_all_response_status(self, code: int = 200, phrase: str = "") -> None:
        for processor in self._request_processor or []:
            processor.report_status(code, reason_phrase=phrase)

    def get_response_headers(self, idx: int) -> dict[str, str]:
        return self._processor(idx).get_response_headers()

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self._processor(idx).add_response_property(key, value)

    def send_intermediate(self, outputs: list[Any], message: str = "", code: int = 200) -> None:
        """Stream one intermediate response per request of the current batch."""
        if self._send_intermediate is None:
            raise RuntimeError(
                "streaming is not available here: no worker is attached to this context"
            )
        self._send_intermediate(outputs, dict(self.request_ids or {}), message, code)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Context) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value like TorchServe's
