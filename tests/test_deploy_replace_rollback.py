"""A `deploy --replace` that fails leaves the old version serving exactly as before (issue 12).

The user's case: a model is served; they redeploy with `--replace` and a handler that breaks
(here at the first request, so the failure comes after the old version was unregistered and
the new one registered). The old archive used to be overwritten in the store first, so the
rollback could only say it "had already been removed". Now the same archive file is back,
the same version is registered with its workers and batching and default role, and it
answers what it answered before.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from _notebook_helpers import engine, ts_env  # noqa: F401

from jupyter_torchserve import api
from jupyter_torchserve.client import Client
from jupyter_torchserve.deployment import deploy
from jupyter_torchserve.handlers.builtins import TensorHandler

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

KEPT = ("modelUrl", "minWorkers", "maxWorkers", "batchSize", "maxBatchDelay", "isDefault")


def _raise(output):  # noqa: ANN001, ANN201
    raise RuntimeError("postprocess failed on purpose")


def _fail_to_load(context):  # noqa: ANN001, ANN201
    raise RuntimeError("initialize failed on purpose")


def _fail_to_load_in_the_engine(context):  # noqa: ANN001, ANN201
    # pre-flight loads the archive from a jts-preflight-* folder and passes; the engine's
    # worker (its own cache folder) does not start, so register fails after the unregister
    if "jts-preflight" not in context.system_properties["model_dir"]:
        raise RuntimeError("initialize failed on purpose in the engine")


class Perturbed(TensorHandler):
    """Serves answers 0.5 off the kernel's: the replace completes, then fails parity."""

    def postprocess(self, output):  # noqa: ANN001, ANN201
        return super().postprocess(output + 0.5)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _served(c: Client, name: str) -> dict[str, dict]:
    return {d["modelVersion"]: {k: d.get(k) for k in KEPT} for d in c.describe(name, "all")}


def test_failed_replace_serves_the_old_version_as_before(engine: dict) -> None:  # noqa: F811
    api._pinned = None
    c = Client.from_info(engine)
    store = Path(engine["model_store"])
    x = torch.ones(1, 3)
    torch.manual_seed(0)
    first, second, broken = (torch.nn.Linear(3, 2) for _ in range(3))
    try:
        deploy(first, "rep", example=x, batch_size=2, max_batch_delay=7, progress="none")
        deploy(second, "rep", version="2.0", example=x, progress="none")
        cases = (
            ("1.0", first, {"postprocess": _raise}, "served again"),  # the parity request fails
            ("1.0", first, {"initialize": _fail_to_load}, "as it was before"),  # pre-flight
            ("1.0", first, {"initialize": _fail_to_load_in_the_engine}, "served again"),
            ("2.0", second, {"postprocess": _raise}, "served again"),  # the default
            ("1.0", first, Perturbed, "answers differently"),  # registered, then parity fails
        )
        for version, model, handler, said in cases:
            if version == "2.0" and not _served(c, "rep")["2.0"]["isDefault"]:
                api.set_default("rep", "2.0", c=c)  # --replace then targets 2.0, the default
            archive = store / f"rep-{version}.mar"
            before = (_digest(archive), _served(c, "rep"), (store / f"rep-{version}.v2.json"))
            v2_body = before[2].read_text()
            with pytest.raises(api.TorchServeError) as e:
                deploy(
                    broken,
                    "rep",
                    version=None if version == "2.0" else version,
                    replace=True,
                    handler=handler,
                    example=x,
                    progress="none",
                )
            message = str(e.value)
            assert said in message, message
            if handler is Perturbed:  # the mismatch is said, and so is the rollback
                assert isinstance(e.value, api.ParityError) and "served again" in message
            if isinstance(handler, dict) and "engine" in getattr(
                handler.get("initialize"), "__name__", ""
            ):
                assert "in the engine" in message  # it got past pre-flight: register failed
            # the same archive file, the same registrations (workers, batching, default)
            assert _digest(archive) == before[0]
            assert _served(c, "rep") == before[1]
            assert (store / f"rep-{version}.v2.json").read_text() == v2_body
            assert not list(store.glob(".jts-replaced-*"))
            # and it answers what it answered before
            got = api.predict("rep", [[1.0, 1.0, 1.0]], version=version, c=c)
            assert torch.allclose(torch.tensor(got), model(x).detach(), atol=1e-5)
        # a replace that works still replaces (and leaves nothing aside)
        dep = deploy(broken, "rep", replace=True, example=x, progress="none")
        assert dep.version == "2.0" and dep.is_default and dep.parity.ok
        assert not list(store.glob(".jts-replaced-*"))
    finally:
        for v in ("1.0", "2.0"):
            try:
                api.set_default("rep", "1.0", c=c) if v == "2.0" else None
                api.unregister("rep", v, c=c)
            except api.TorchServeError:
                pass
