"""Issue 3: a real TorchServe 0.12 serves our archives unchanged, with the same answers.

Each case archives an in-memory model with ``archive()``, registers the same ``.mar`` in a
real TorchServe 0.12 (Java frontend + Python workers, from a venv WITHOUT jupyter_torchserve)
and in our engine, sends both the same requests and compares the answers (and both with the
in-memory model).

* digits CNN (``jupyter_torchserve.examples.mnist``) with the ``image_classifier`` built-in:
  formats ``export`` and ``torchscript``. ``eager`` does not apply: the class lives in our
  own package, and ``archive()`` rightly refuses to write an archive that imports it.
* a small MLP defined in this module with the default ``tensor`` handler: ``export``,
  ``torchscript`` and ``eager`` (its source captured into the archive's ``model.py``).

Runs when ``$JTS_TORCHSERVE_VENV`` (or ``.torchserve-venv``) holds torchserve==0.12.0 and
java is on PATH; build the venv with ``scripts/torchserve-venv.sh``. Otherwise it skips.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import math
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _torchserve_helpers import (
    TorchServe,
    engine_beside,
    predict,
    register,
    skip_reason,
    unregister,
    venv_python,
)
from torch import nn

SKIP = skip_reason()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.torchserve,
    pytest.mark.skipif(SKIP is not None, reason=SKIP or ""),
    pytest.mark.timeout(600),
]

RTOL, ATOL = 1e-5, 1e-6


# -- servers -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def torchserve(tmp_path_factory: pytest.TempPathFactory, store: Path) -> Iterator[TorchServe]:
    with TorchServe(tmp_path_factory.mktemp("torchserve"), store) as server:
        yield server


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, store: Path) -> Iterator[dict[str, Any]]:
    with engine_beside(tmp_path_factory.mktemp("engine"), store) as info:
        yield info


@contextmanager
def served(ts: TorchServe, engine: dict[str, Any], mar: Path, name: str) -> Iterator[None]:
    """``mar`` registered as ``name`` in TorchServe and in our engine."""
    try:
        try:
            register(ts.management, mar.name, name)
        except RuntimeError as exc:
            raise AssertionError(
                f"TorchServe 0.12 did not load {mar.name}: {exc}\n{ts.logs()}"
            ) from exc
        register(engine["management_address"], mar.name, name)
        yield
    finally:
        unregister(ts.management, name)
        unregister(engine["management_address"], name)


def ask_both(ts: TorchServe, engine: dict[str, Any], name: str, **request: Any) -> tuple[Any, Any]:
    """The same request to TorchServe and to our engine: both must answer 200 with JSON."""
    answers = []
    for server, address in (("TorchServe", ts.inference), ("ours", engine["inference_address"])):
        r = predict(address, name, **request)
        assert r.status_code == 200, f"{server} answered {r.status_code}: {r.text[:2000]}"
        answers.append(r.json())
    return answers[0], answers[1]


# -- archive checks --------------------------------------------------------------------------
def assert_self_contained(mar: Path, uses_ts: bool = False) -> None:
    """No Python file of the archive imports jupyter_torchserve (or TorchServe's ts, unless
    the user's handler is written on TorchServe's BaseHandler: `uses_ts`)."""
    banned = {"jupyter_torchserve"} if uses_ts else {"jupyter_torchserve", "ts"}
    with zipfile.ZipFile(mar) as z:
        sources = {n: z.read(n).decode() for n in z.namelist() if n.endswith(".py")}
    assert sources, f"{mar.name} holds no Python file"
    for filename, source in sources.items():
        for node in ast.walk(ast.parse(source, filename)):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            assert not banned & set(roots), f"{mar.name}:{filename}:{node.lineno} imports {roots}"


def test_torchserve_venv_lacks_our_package() -> None:
    """The premise: the TorchServe under test cannot import jupyter_torchserve."""
    out = venv_python(
        "import importlib.util, importlib.metadata as md",
        "print(md.version('torchserve'), md.version('torch'))",
        "print(importlib.util.find_spec('jupyter_torchserve') is not None)",
    )
    assert out.returncode == 0, out.stderr
    versions, has_ours = out.stdout.split("\n")[:2]
    assert versions.split()[0] == "0.12.0"
    assert has_ours == "False"


# -- (a) the digits CNN with the image_classifier built-in --------------------------------
@pytest.fixture(scope="module")
def digits() -> tuple[Any, nn.Module]:
    from jupyter_torchserve.examples import mnist

    data = mnist.load_data()
    return data, mnist.train(data=data, epochs=1)


def top_k(model: nn.Module, image: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
    from jupyter_torchserve.examples import mnist

    with torch.no_grad():
        probs = torch.softmax(model(mnist.to_tensor(image)), dim=1)[0]
    values, indices = probs.topk(k)
    return [
        (mnist.LABELS[str(i)], v) for i, v in zip(indices.tolist(), values.tolist(), strict=True)
    ]


def assert_same_topk(got: dict[str, float], want: dict[str, float], what: str) -> None:
    assert isinstance(got, dict) and isinstance(want, dict), (what, got, want)
    assert list(got) == list(want), f"{what}: top-k labels differ: {got} vs {want}"
    for label in want:
        assert math.isclose(got[label], want[label], rel_tol=RTOL, abs_tol=ATOL), (
            f"{what}: p({label}) {got[label]} vs {want[label]}"
        )


@pytest.mark.parametrize("fmt", ["export", "torchscript"])
def test_digits_cnn_same_answers(
    fmt: str,
    digits: tuple[Any, nn.Module],
    store: Path,
    torchserve: TorchServe,
    engine: dict[str, Any],
) -> None:
    from jupyter_torchserve.archive import archive
    from jupyter_torchserve.examples import mnist

    data, model = digits
    name = f"digits-{fmt}"
    result = archive(
        model,
        name=name,
        handler="image_classifier",
        example_inputs=mnist.to_tensor(mnist.digit_image(0, data)),
        extra_files={"index_to_name.json": mnist.LABELS},
        handler_config={"mean": list(mnist.MEAN), "std": list(mnist.STD)},
        export_path=store,
        format=fmt,
        force=True,
    )
    assert result.format == fmt
    assert_self_contained(result.path)

    with served(torchserve, engine, result.path, name):
        for digit in range(10):
            image = mnist.digit_image(digit, data)
            png = mnist.png_bytes(image)
            want = dict(top_k(model, image))
            requests_: dict[str, dict[str, Any]] = {
                "raw png": {"data": png, "headers": {"Content-Type": "image/png"}},
                "multipart": {"files": {"data": ("digit.png", png, "image/png")}},
            }
            if digit < 2:  # base64 text, as KServe-style clients send it
                requests_["base64"] = {
                    "data": base64.b64encode(png),
                    "headers": {"Content-Type": "text/plain"},
                }
            for how, request in requests_.items():
                theirs, ours = ask_both(torchserve, engine, name, **request)
                what = f"{name}, digit {digit}, {how}"
                assert_same_topk(theirs, ours, what + ", TorchServe vs ours")
                assert_same_topk(theirs, want, what + ", TorchServe vs the in-memory model")


# -- (b) a small MLP with the default tensor handler -----------------------------------------
class MLP(nn.Module):
    def __init__(self, n_in: int = 6, hidden: int = 16, n_out: int = 3) -> None:
        super().__init__()
        self.n_in, self.hidden, self.n_out = n_in, hidden, n_out
        self.fc1 = nn.Linear(n_in, hidden)
        self.fc2 = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def torch_bytes(tensor: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    torch.save(tensor, buf)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["export", "torchscript", "eager"])
def test_mlp_tensor_handler_same_answers(
    fmt: str, store: Path, torchserve: TorchServe, engine: dict[str, Any]
) -> None:
    from jupyter_torchserve.archive import archive

    torch.manual_seed(0)
    model = MLP(6, 12, 3).eval()
    x = torch.randn(3, 6)
    name = f"mlp-{fmt}"
    result = archive(
        model,
        name=name,
        example_inputs=x[:1],
        export_path=store,
        format=fmt,
        init_kwargs={"n_in": 6, "hidden": 12, "n_out": 3},
        force=True,
    )
    assert result.format == fmt
    assert_self_contained(result.path)
    with torch.no_grad():
        want = model(x)

    as_json = {"Content-Type": "application/json"}
    cases: dict[str, tuple[dict[str, Any], torch.Tensor]] = {
        "json batch": ({"data": json.dumps(x.tolist()), "headers": as_json}, want),
        "json one sample": ({"data": json.dumps(x[0].tolist()), "headers": as_json}, want[0]),
        "json {data}": (
            {"data": json.dumps({"data": x[:2].tolist()}), "headers": as_json},
            want[:2],
        ),
        "npy": (
            {"data": npy_bytes(x.numpy()), "headers": {"Content-Type": "application/x-npy"}},
            want,
        ),
        "torch.save": (
            {"data": torch_bytes(x), "headers": {"Content-Type": "application/octet-stream"}},
            want,
        ),
    }
    with served(torchserve, engine, result.path, name):
        for how, (request, expected) in cases.items():
            theirs, ours = ask_both(torchserve, engine, name, **request)
            what = f"{name}, {how}"
            t_theirs, t_ours = torch.tensor(theirs), torch.tensor(ours)
            assert t_theirs.shape == expected.shape, f"{what}: shape {t_theirs.shape}"
            assert torch.allclose(t_theirs, t_ours, rtol=RTOL, atol=ATOL), (
                f"{what}: TorchServe {theirs} vs ours {ours}"
            )
            assert torch.allclose(t_theirs, expected, rtol=1e-4, atol=1e-5), (
                f"{what}: TorchServe {theirs} vs the in-memory model {expected.tolist()}"
            )
        # the request's own mistakes: a 400 naming them from both, as the handler raises
        # TorchServe's PredictionException where TorchServe serves it
        mistakes = {
            b"{not json": "the request body is not valid JSON",
            json.dumps(x[:, :4].tolist()).encode(): "has shape [3, 4], but the model was archived",
        }
        for body, says in mistakes.items():
            for server, address in (
                ("TorchServe", torchserve.inference),
                ("ours", engine["inference_address"]),
            ):
                r = predict(address, name, data=body, headers=as_json)
                assert r.status_code == 400 and says in r.json()["message"], f"{server}: {r.text}"


@pytest.mark.parametrize("fmt", ["export", "torchscript", "eager"])
def test_notebook_base_handler_subclass_same_answers(
    fmt: str, store: Path, torchserve: TorchServe, engine: dict[str, Any]
) -> None:
    """A BaseHandler subclass from the notebook, in every format (export is deploy's
    default): TorchServe's own BaseHandler loads the archive and answers as ours does."""
    from _ts_handler_subclass import RowsHandler

    from jupyter_torchserve.archive import archive

    torch.manual_seed(1)
    model = MLP().eval()  # TorchServe's BaseHandler builds an eager model without arguments
    x = torch.randn(2, 6)
    name = f"rows-{fmt}"
    result = archive(
        model,
        name=name,
        handler=RowsHandler,
        example_inputs=x[:1],
        export_path=store,
        format=fmt,
        force=True,
    )
    assert result.format == fmt
    assert_self_contained(result.path, uses_ts=True)
    with torch.no_grad():
        want = model(x)
    with served(torchserve, engine, result.path, name):
        for row in range(2):
            request = {"json": x[row].tolist()}
            theirs, ours = ask_both(torchserve, engine, name, **request)
            assert torch.allclose(torch.tensor(theirs), torch.tensor(ours), rtol=RTOL, atol=ATOL)
            assert torch.allclose(torch.tensor(theirs), want[row], rtol=1e-4, atol=1e-5), (
                f"{name}: TorchServe {theirs} vs the in-memory model {want[row].tolist()}"
            )
