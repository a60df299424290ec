"""A handler written as a notebook user writes one: a subclass of TorchServe's BaseHandler
(``ts`` from our compatibility layer here, TorchServe's own in TorchServe)."""

from __future__ import annotations

from jupyter_torchserve.handlers.compat import ensure_ts_importable

ensure_ts_importable()

import json  # noqa: E402

import torch  # noqa: E402
from ts.torch_handler.base_handler import BaseHandler  # noqa: E402


class RowsHandler(BaseHandler):
    def preprocess(self, data):
        rows = []
        for row in data:
            body = row.get("data") or row.get("body")
            if isinstance(body, (bytes, bytearray)):
                body = json.loads(body)
            rows.append(body)
        return torch.tensor(rows, dtype=torch.float32).to(self.device)

    def postprocess(self, data):
        return data.tolist()
