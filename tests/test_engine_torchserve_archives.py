"""Archives made by torch-model-archiver 0.12 whose handler is a module of their own serve in
the engine on all three protocols, with TorchServe's handler API (`ts.*` from the compat
layer, since torchserve itself is not installed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import requests
import torch
from _engine_helpers import running_engine

pytestmark = pytest.mark.slow  # starts real processes

MODEL_FILE = textwrap.dedent("""
    import torch

    class TwoLayer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(4, 8)
            self.fc2 = torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))
""")

# a handler class on TorchServe's BaseHandler: it loads modelFile + state_dict itself
CLASS_HANDLER = textwrap.dedent("""
    import json
    import torch
    from ts.torch_handler.base_handler import BaseHandler

    class RowsHandler(BaseHandler):
        def preprocess(self, data):
            rows = []
            for row in data:
                body = row.get("data") or row.get("body")
                if isinstance(body, (bytes, bytearray)):
                    body = json.loads(body)
                rows.append(torch.tensor(body, dtype=torch.float32).reshape(-1, 4))
            self._sizes = [len(r) for r in rows]
            return torch.cat(rows).to(self.device)

        def postprocess(self, data):
            out, start = [], 0
            for n in self._sizes:
                out.append(data[start:start + n].tolist())
                start += n
            return out
""")

# a module-level entry point: handle(data, context), initialised with data=None
FUNCTION_HANDLER = textwrap.dedent("""
    import json, os
    import torch
    from model import TwoLayer

    _model = None

    def handle(data, context):
        global _model
        if _model is None:
            d = context.system_properties["model_dir"]
            _model = TwoLayer()
            _model.load_state_dict(torch.load(os.path.join(d, "weights.pt"), weights_only=True))
            _model.eval()
        if data is None:
            return None
        out = []
        for row in data:
            body = row.get("data") or row.get("body")
            if isinstance(body, (bytes, bytearray)):
                body = json.loads(body)
            with torch.no_grad():
                out.append(_model(torch.tensor(body, dtype=torch.float32).reshape(-1, 4)).tolist())
        return out
""")

X = [[1.0, 2.0, 3.0, 4.0], [0.0, -1.0, 0.5, 2.0]]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pytest.importorskip("model_archiver", reason="torch-model-archiver 0.12 is a test dependency")
    tmp = tmp_path_factory.mktemp("tma")
    (tmp / "model.py").write_text(MODEL_FILE)
    (tmp / "rows_handler.py").write_text(CLASS_HANDLER)
    (tmp / "fn_handler.py").write_text(FUNCTION_HANDLER)
    sys.path.insert(0, str(tmp))
    sys.modules.pop("model", None)  # another test's archive may have left its model.py there
    try:
        from model import TwoLayer
    finally:
        sys.path.remove(str(tmp))
    torch.manual_seed(3)
    model = TwoLayer().eval()
    torch.save(model.state_dict(), tmp / "weights.pt")
    store = tmp / "store"
    store.mkdir()
    for name, handler in (("rows", "rows_handler.py"), ("fn", "fn_handler.py")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "model_archiver.model_packaging",
                "--model-name",
                name,
                "--version",
                "1.0",
                "--model-file",
                str(tmp / "model.py"),
                "--serialized-file",
                str(tmp / "weights.pt"),
                "--handler",
                str(tmp / handler),
                "--export-path",
                str(store),
            ],
            check=True,
            capture_output=True,
        )
    with torch.no_grad():
        expected = model(torch.tensor(X)).numpy()
    return tmp, store, expected


@pytest.mark.parametrize("name", ["rows", "fn"])
def test_torch_model_archiver_archive_serves_on_all_protocols(built, name):
    tmp, store, expected = built
    with running_engine(tmp / f"engine-{name}", model_store=str(store)) as (info, client):
        client.register(f"{name}.mar", initial_workers=1)
        base = info["inference_address"]
        r = requests.post(f"{base}/predictions/{name}", json=X)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.array(r.json()), expected, rtol=1e-5, atol=1e-6)
        r = requests.put(
            f"{base}/predictions/{name}",
            data=str(X[0]).encode(),
            headers={"Content-Type": "application/json"},
        )
        np.testing.assert_allclose(np.array(r.json()), expected[:1], rtol=1e-5, atol=1e-6)
        v1 = requests.post(
            f"{base}/v1/models/{name}:predict", json={"instances": [{"data": row} for row in X]}
        ).json()
        np.testing.assert_allclose(
            np.array(v1["predictions"]).reshape(2, 3), expected, rtol=1e-5, atol=1e-6
        )
        v2 = requests.post(
            f"{base}/v2/models/{name}/infer",
            json={
                "inputs": [
                    {
                        "name": "x",
                        "shape": [2, 4],
                        "datatype": "FP32",
                        "data": [v for row in X for v in row],
                    }
                ]
            },
        )
        assert v2.status_code == 200, v2.text
        (out,) = v2.json()["outputs"]
        np.testing.assert_allclose(
            np.array(out["data"]).reshape(2, 3), expected, rtol=1e-5, atol=1e-6
        )
        (d,) = client.describe(name)
        assert d["modelUrl"] == f"{name}.mar" and d["workers"][0]["status"] == "READY"
