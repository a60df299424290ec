"""A model with two inputs, deployed and archived from a tuple or a dict example (issue 12, 3).

The user's case: ``deploy(TwoIn(), "twoin", example=(a, b))`` used to register a model with an
empty schema and then crash. Here the schema names both inputs, pre-flight and parity pass,
a KServe v2 request with two named inputs answers what ``model(a, b)`` gives in the kernel,
and the printed snippets run as they are.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from _notebook_helpers import engine, ts_env  # noqa: F401

from jupyter_torchserve import api
from jupyter_torchserve.archive import archive
from jupyter_torchserve.deployment import deploy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


class TwoIn(torch.nn.Module):
    """Two inputs of different widths, so that mixing them up cannot go unnoticed."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fa = torch.nn.Linear(4, 3)
        self.fb = torch.nn.Linear(2, 3)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.fa(a) * 2 - self.fb(b)


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randn(2, 4), torch.randn(2, 2)


def _v2_answer(body: dict[str, Any]) -> torch.Tensor:
    out = body["outputs"][0]
    return torch.tensor(out["data"]).reshape(out["shape"])


@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_two_inputs_deploy_serve_and_snippets(
    engine: dict,  # noqa: F811
    inputs: tuple[torch.Tensor, torch.Tensor],
    kind: str,
) -> None:
    a, b = inputs
    model = TwoIn()
    example = (a, b) if kind == "tuple" else {"b": b, "a": a}  # keys in any order
    names = ["input-0", "input-1"] if kind == "tuple" else ["a", "b"]
    name = f"twoin_{kind}"
    dep = deploy(model, name, example=example, progress="none")
    want = model(a, b).detach()

    assert [i["name"] for i in dep.schema["inputs"]] == names
    assert [i["shape"] for i in dep.schema["inputs"]] == [[-1, 4], [-1, 2]]
    assert dep.preflight_max_abs_diff is not None and dep.preflight_max_abs_diff < 1e-5
    assert dep.parity.ok and dep.parity.max_abs_diff < 1e-5, dep.parity

    # by position, or keyed by the schema's names, whichever way the example was given
    for given in ((a, b), dict(zip(names, (a, b), strict=True))):
        assert torch.allclose(torch.tensor(dep.predict(given)), want, atol=1e-5)

    c = api.client(engine)
    assert [i["name"] for i in c.v2_metadata(name)["inputs"]] == names
    v2 = [
        {"name": n, "shape": list(t.shape), "datatype": "FP32", "data": t.reshape(-1).tolist()}
        for n, t in zip(names, (a, b), strict=True)
    ]
    served = _v2_answer(c.kserve_v2_infer(name, v2))
    assert torch.allclose(served, want, atol=1e-5)

    # the printed snippets, run as printed
    snippets = dep.snippets
    for key in ("curl", "curl_v1", "curl_v2"):
        out = subprocess.run(snippets[key], shell=True, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        body = json.loads(out.stdout)
        if key == "curl_v2":
            got = _v2_answer(body)
        else:  # KServe v1: one prediction per instance, an instance being one sample
            got = torch.tensor(body["predictions"] if key == "curl_v1" else body)
        assert torch.allclose(got, want, atol=1e-5), (key, body)
    # the v1 body: one instance per sample, keyed by input name
    instances = json.loads(Path(dep.payloads["v1"]).read_text())["instances"]
    assert [sorted(i) for i in instances] == [sorted(names)] * len(a)
    assert instances[1][names[1]] == b[1].tolist()
    sent = json.loads(Path(dep.payloads["v2"]).read_text())["inputs"]
    assert sorted(i["name"] for i in sent) == sorted(names)
    ns: dict[str, Any] = {}
    exec(snippets["python"], ns)  # prints the answer; must not raise
    exec(snippets["python_v2"], ns)

    # archive() with the same example writes the same schema
    result = archive(model, name, example_inputs=example, export_path=engine["model_store"])
    assert result.schema == dep.schema
    c.unregister(name, dep.version)


def test_wrong_arity_is_refused_and_nothing_stays(
    engine: dict,  # noqa: F811
    inputs: tuple[torch.Tensor, torch.Tensor],
) -> None:
    a, b = inputs
    store = Path(engine["model_store"])
    for bad in ((a, b, a), {"a": a, "c": b}):
        with pytest.raises(api.TorchServeError, match=r"TwoIn\.forward\(a"):
            deploy(TwoIn(), "twoin_bad", example=bad, progress="none")
        assert "twoin_bad" not in [m["modelName"] for m in api.client(engine).models]
        assert not list(store.glob("twoin_bad*"))
