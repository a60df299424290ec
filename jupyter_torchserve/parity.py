"""The parity check: does the served model answer like the one in the kernel?

Why a module of its own that takes a client and a name (never a ``Deployment``): the check
is a question to an engine about one served version, and a deploy is only one of its
callers. Kept apart from the pipeline, it imports nothing that imports it.

The example goes through ``/predictions`` and the in-kernel model gets the very tensor the
handler builds from the same request (see :mod:`jupyter_torchserve.payloads`); then:

* tensor-style answers (a nested list) are compared element-wise with ``model(input)``;
* ``image_classifier`` answers (``{label: probability}``) are compared with the softmax of
  the model output, label by label;
* with notebook hooks, ``postprocess(model(preprocess([request])))`` runs here in the kernel
  and is compared with the served answer (numbers within the tolerance, the rest for
  equality).

Anything else cannot be compared without knowing the handler's meaning: the check is
skipped and the answer kept in ``served`` for the user to look at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .api import decode_response
from .client import Client
from .payloads import Example, request_body

#: Why a ``workers=0`` deploy has no parity check (and how to get one).
NO_WORKER_PARITY = (
    "deployed with 0 workers, so nothing can answer yet: scale it up with "
    "`%torchserve scale {name} 1` and send the example with `%torchserve predict`"
)

#: Largest max-abs difference between served and in-kernel outputs that still passes.
DEFAULT_TOLERANCE = 1e-3


@dataclass
class Parity:
    """Outcome of sending the example through the served endpoint.

    ``ok`` is None when the check was skipped (no example, or an answer that cannot be
    compared with the model output); ``detail`` says why.
    """

    ok: bool | None
    max_abs_diff: float | None = None
    tolerance: float = DEFAULT_TOLERANCE
    detail: str = ""
    served: Any = None
    expected: Any = None

    def __str__(self) -> str:
        if self.ok is None:
            return f"skipped ({self.detail})"
        verdict = "ok" if self.ok else "FAILED"
        extra = f"; {self.detail}" if self.detail else ""
        return (
            f"{verdict}: max |served − in-kernel| = {self.max_abs_diff:.3g} "
            f"(tolerance {self.tolerance:g}){extra}"
        )


def mismatch_message(name: str, version: str, parity: Parity, replaced: bool) -> str:
    """What a deploy whose served answers differ from the kernel's tells the user.

    A plain deploy keeps the new version registered to be looked at: nothing else was
    touched. A ``--replace`` is undone instead (the pipeline raises inside its rollback),
    because keeping it would leave the user without the version that answered right.
    """
    said = f"The served model {name} {version} answers differently from the in-kernel model: "
    if replaced:
        return f"{said}{parity}.\nFix the handler and deploy with --replace again."
    return (
        f"{said}{parity}.\nIt is still registered: look at it with `%torchserve predict "
        f"{name} ...`, fix the handler and redeploy with --replace, or `%torchserve "
        f"unregister {name} --version {version}`."
    )


def check_parity(
    c: Client,
    name: str,
    version: str | None,
    model: Any,
    example: Example,
    *,
    handler: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    labels: dict[str, str] | None = None,
    hooks: dict[str, Any] | None = None,
) -> Parity:
    """Send ``example`` to ``name`` (``version``; None for the default) and compare.

    ``handler`` is the built-in handler's name (it says how to read the answer), ``labels``
    the archive's ``index_to_name.json`` map, ``hooks`` the notebook's own pre/postprocess
    functions when the handler is made of them.
    """
    if hooks:
        return _hooks_parity(c, name, version, model, example, hooks, tolerance)
    body, ctype = request_body(example)
    served = decode_response(c.predict(name, body, version=version, content_type=ctype))
    if example.tensor is None:
        return Parity(None, detail="no tensor example to run in the kernel", served=served)
    out = model_output(model, example.tensor)
    if isinstance(served, dict) and handler == "image_classifier":
        return _topk_parity(served, out, tolerance, labels)
    import numpy as np

    try:
        got = np.asarray(served, dtype=np.float64)
        want = _to_numpy(out)
    except (TypeError, ValueError):
        return Parity(None, detail="the handler's answer is not a tensor", served=served)
    if want is None or got.size != want.size:
        return Parity(
            None,
            detail=f"answer shape {list(got.shape)} differs from the model output's "
            f"{None if want is None else list(want.shape)}",
            served=served,
        )
    diff = float(np.max(np.abs(got.reshape(-1) - want.reshape(-1)))) if got.size else 0.0
    ok = bool(np.isfinite(diff) and diff <= tolerance)
    return Parity(ok, diff, tolerance, served=served, expected=want.tolist())


def model_output(model: Any, tensor: Any) -> Any:
    """``model(tensor)`` in eval mode without autograd; the user's training mode is restored.

    Several inputs are passed as the example gave them: a tuple by position, a dict by keyword.
    The inputs are moved to the model's device (``archive.devices``).
    """
    import torch

    from .archive.devices import model_device, to_device

    tensor = to_device(tensor, model_device(model))
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.no_grad():
            if isinstance(tensor, tuple):
                return model(*tensor)
            if isinstance(tensor, dict):
                return model(**tensor)
            return model(tensor)
    finally:
        if was_training:
            model.train()


def _hooks_parity(
    c: Client,
    name: str,
    version: str | None,
    model: Any,
    example: Example,
    hooks: dict[str, Any],
    tolerance: float,
) -> Parity:
    """The notebook's own pre/post-processing around the in-kernel model vs the served answer."""
    tensor, request = example
    if request is not None:
        resp = c.predict(name, request, version=version)
    else:
        body = json.dumps(tensor.tolist()).encode()
        resp = c.predict(name, body, version=version, content_type="application/json")
    served = decode_response(resp)
    if tensor is None:
        return Parity(None, detail="no model input: give a tensor or a preprocess hook")
    out = model_output(model, tensor)
    expected = hooks["postprocess"](out) if "postprocess" in hooks else _to_numpy(out).tolist()
    if isinstance(expected, (list, tuple)) and len(expected) == 1:
        expected = expected[0]
    diff = _max_diff(served, _plain(expected))
    if diff is None:
        return Parity(None, detail="answers are not comparable", served=served)
    return Parity(diff <= tolerance, diff, tolerance, served=served, expected=_plain(expected))


def _plain(value: Any) -> Any:
    """Tensors/arrays/numpy scalars -> JSON-like Python values, as the worker would send."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _max_diff(a: Any, b: Any) -> float | None:
    """Max abs difference of two JSON-like values; inf when their structure differs."""
    if isinstance(a, bool) or isinstance(b, bool):
        return 0.0 if a == b else float("inf")
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b))
    if isinstance(a, dict) and isinstance(b, dict):
        if set(map(str, a)) != set(map(str, b)):
            return float("inf")
        diffs = [_max_diff(a[k], b[k]) for k in a]
        return max([d for d in diffs if d is not None], default=0.0)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return float("inf")
        diffs = [_max_diff(x, y) for x, y in zip(a, b, strict=True)]
        return max([d for d in diffs if d is not None], default=0.0)
    return 0.0 if a == b else float("inf")


def _to_numpy(out: Any) -> Any:
    import numpy as np

    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if hasattr(out, "detach"):
        return out.detach().cpu().double().numpy()
    try:
        return np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def _topk_parity(
    served: dict[str, Any], out: Any, tolerance: float, labels: dict[str, str] | None
) -> Parity:
    import torch

    logits = out[0] if isinstance(out, (tuple, list)) else out
    probs = torch.softmax(logits.detach().double().reshape(-1), 0)
    # log_softmax outputs are fine too: softmax is invariant to the per-row shift
    diffs = []
    for label, p in served.items():
        idx = _label_index(label, labels)
        if idx is None or idx >= probs.numel():
            return Parity(False, float("inf"), tolerance, f"unknown label {label!r}", served)
        diffs.append(abs(float(p) - float(probs[idx])))
    diff = max(diffs) if diffs else 0.0
    top = int(probs.argmax())
    return Parity(diff <= tolerance, diff, tolerance, served=served, expected={"top": top})


def labels_from(extra_files: dict[str, Any] | None) -> dict[str, str] | None:
    """The ``index_to_name.json`` label map among the extra files (dict, JSON text or path)."""
    value = (extra_files or {}).get("index_to_name.json")
    if value is None or isinstance(value, dict):
        return value
    try:
        if isinstance(value, (str, Path)) and Path(value).is_file():
            value = Path(value).read_text()
        return json.loads(value)
    except (OSError, ValueError, TypeError):
        return None


def _label_index(label: str, labels: Any) -> int | None:
    if isinstance(labels, dict):
        for k, v in labels.items():
            if str(v) == str(label):
                return int(k)
    try:
        return int(label)
    except (TypeError, ValueError):
        return None
