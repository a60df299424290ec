"""Canary traffic: a share of a model's default route sent to another version (canary.py).

The routing rules are tested in-process on a registry whose versions have no workers (fast
tier); the split as clients see it, on every HTTP protocol, through a real engine with real
workers (slow).
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import requests
from _engine_helpers import manifest, probe_mar, running_engine, write_mar

from jupyter_torchserve import contract
from jupyter_torchserve.client import EngineError
from jupyter_torchserve.config import EngineConfig
from jupyter_torchserve.engine.canary import Canary, parse_percent
from jupyter_torchserve.engine.errors import ApiError
from jupyter_torchserve.engine.registration import Registration
from jupyter_torchserve.engine.registry import ModelRegistry
from jupyter_torchserve.prometheus import samples


def _registry(tmp_path: Path) -> ModelRegistry:
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    for version in ("1.0", "2.0", "3.0"):
        probe_mar(store, "m", version)
    return ModelRegistry(
        EngineConfig(
            state_dir=str(tmp_path / "state"),
            model_store=str(store),
            default_workers_per_model=0,
            disable_token_authorization=True,
        )
    )


def _with_versions(tmp_path: Path, scenario) -> object:
    async def run() -> object:
        registry = _registry(tmp_path)
        for version in ("1.0", "2.0", "3.0"):
            await registry.register(Registration(f"m-{version}.mar"))
        try:
            return scenario(registry)
        finally:
            await registry.shutdown()

    return asyncio.run(run())


def test_a_draw_below_the_percent_goes_to_the_canary_and_every_draw_is_counted():
    draws = iter([0.10, 0.30, 0.2499, 0.25, 0.99])
    canary = Canary("2.0", 25, draw=lambda: next(draws))
    assert [canary.choose("1.0") for _ in range(5)] == ["2.0", "1.0", "2.0", "1.0", "1.0"]
    assert canary.routed == {"2.0": 2, "1.0": 3}
    shown = canary.to_json("1.0")
    assert shown["requests"] == {"1.0": 3, "2.0": 2} and shown["observedPercent"] == 40.0
    assert canary.version_json("2.0", "1.0")["percent"] == 25
    assert canary.version_json("1.0", "1.0")["role"] == "default"
    assert canary.version_json("3.0", "1.0") is None


@pytest.mark.parametrize("bad", [None, "", "0", "100", "-5", "abc", "150"])
def test_a_percent_that_is_not_a_canary_is_refused_with_a_400(bad):
    with pytest.raises(ApiError) as err:
        parse_percent(bad)
    assert err.value.status == 400


def test_only_the_default_route_is_split_and_describing_the_default_never_draws(tmp_path):
    def scenario(registry: ModelRegistry) -> dict:
        registry.start_canary("m", "2.0", 50)
        routed = Counter(registry.get_version("m").version for _ in range(400))
        pinned = {v: registry.get_version("m", v).version for v in ("1.0", "2.0", "3.0")}
        described = {registry.get_version("m", routed=False).version for _ in range(50)}
        return {"routed": routed, "pinned": pinned, "described": described}

    out = _with_versions(tmp_path, scenario)
    assert set(out["routed"]) == {"1.0", "2.0"} and 140 <= out["routed"]["2.0"] <= 260
    assert out["pinned"] == {"1.0": "1.0", "2.0": "2.0", "3.0": "3.0"}
    assert out["described"] == {"1.0"}


def test_promoting_or_unregistering_the_canary_ends_it(tmp_path):
    def promote(registry: ModelRegistry) -> tuple:
        registry.start_canary("m", "2.0", 20)
        registry.set_default("m", "3.0")  # another version: the canary stays
        still = registry.canary_json("m")["canary"]["canaryVersion"]
        registry.set_default("m", "2.0")
        return still, registry.canary_json("m"), {registry.get_version("m").version}

    still, after, routed = _with_versions(tmp_path, promote)
    assert still == "2.0"
    assert after == {"modelName": "m", "defaultVersion": "2.0", "canary": None}
    assert routed == {"2.0"}

    async def run() -> dict:
        registry = _registry(tmp_path / "again")
        for version in ("1.0", "2.0", "3.0"):
            await registry.register(Registration(f"m-{version}.mar"))
        registry.start_canary("m", "3.0", 20)
        await registry.unregister("m", "3.0")
        shown = registry.canary_json("m")
        await registry.shutdown()
        return shown

    (tmp_path / "again").mkdir()
    assert asyncio.run(run())["canary"] is None


def test_a_canary_must_be_another_registered_version(tmp_path):
    def scenario(registry: ModelRegistry) -> list[tuple[int, str]]:
        errors = []
        for call in (
            lambda: registry.start_canary("m", "1.0", 20),  # the default itself
            lambda: registry.start_canary("m", "9.9", 20),
            lambda: registry.start_canary("nope", "2.0", 20),
            lambda: registry.end_canary("m"),  # none running
        ):
            try:
                call()
            except ApiError as e:
                errors.append((e.status, e.type))
        return errors

    assert _with_versions(tmp_path, scenario) == [
        (400, "BadRequestException"),
        (404, "ModelVersionNotFoundException"),
        (404, "ModelNotFoundException"),
        (404, "CanaryNotFoundException"),
    ]


# -- through a real engine ------------------------------------------------------------------
# A handler that answers with the version of the archive it serves, whatever the protocol.
WHICH_HANDLER = textwrap.dedent("""
    def handle(data, context):
        if data is None:
            return None
        return [[float(context.manifest["model"]["modelVersion"])] for _ in data]
""")


def _which_mar(store: Path, version: str) -> None:
    write_mar(
        store / f"which-{version}.mar",
        {"which.py": WHICH_HANDLER, "dummy.txt": "x"},
        manifest("which", version, "dummy.txt", "which.py"),
    )


@pytest.mark.slow
def test_a_25_percent_canary_takes_about_a_quarter_of_the_default_route_on_every_protocol(
    tmp_path,
):
    store = tmp_path / "store"
    store.mkdir()
    for version in ("1.0", "2.0"):
        _which_mar(store, version)
    with running_engine(tmp_path, model_store=store) as (info, c):
        for version in ("1.0", "2.0"):
            c.register(f"which-{version}.mar", initial_workers=1, synchronous=True)
        base = c.inference_address
        started = c.start_canary("which", "2.0", 25)
        assert "takes 25% of the default route" in started["status"]

        http = requests.Session()
        answers: Counter[str] = Counter()
        by_protocol: dict[str, Counter[str]] = {"predictions": Counter(), "v1": Counter()}
        by_protocol["v2"] = Counter()
        for i in range(800):
            kind = ("predictions", "predictions", "v1", "v2")[i % 4]
            if kind == "predictions":
                r = http.post(f"{base}/predictions/which", json=[0])
                got = str(r.json()[0])
            elif kind == "v1":
                r = http.post(f"{base}/v1/models/which:predict", json={"instances": [[0]]})
                got = str(r.json()["predictions"][0])
            else:
                body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [0]}]}
                r = http.post(f"{base}/v2/models/which/infer", json=body)
                assert r.status_code == 200, r.text
                got = r.json()["model_version"]
                assert str(r.json()["outputs"][0]["data"][0]) == got  # the answer agrees
            assert r.status_code == 200, r.text
            answers[got] += 1
            by_protocol[kind][got] += 1
        share = answers["2.0"] / 800
        assert 0.18 <= share <= 0.32, answers
        for kind, seen in by_protocol.items():  # every protocol is split, none all one way
            assert seen["2.0"] > 0 and seen["1.0"] > 0, (kind, seen)

        # versioned URLs always reach their version, and are not counted in the split
        for version in ("1.0", "2.0"):
            for _ in range(20):
                r = http.post(f"{base}/predictions/which/{version}", json=[0])
                assert str(r.json()[0]) == version
                body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [0]}]}
                r = http.post(f"{base}/v2/models/which/versions/{version}/infer", json=body)
                assert r.json()["model_version"] == version

        shown = c.canary("which")["canary"]
        assert shown["requests"] == {"1.0": answers["1.0"], "2.0": answers["2.0"]}
        assert shown["percent"] == 25 and shown["observedPercent"] == round(
            100 * answers["2.0"] / 800, 2
        )
        described = {d["modelVersion"]: d for d in c.describe("which", "all")}
        assert described["2.0"]["traffic"]["role"] == "canary"
        assert described["2.0"]["traffic"]["requests"] == answers["2.0"]
        assert described["1.0"]["traffic"]["percent"] == 75
        assert c.describe("which")[0]["modelVersion"] == "1.0"  # describe never draws

        page = c.metrics(["jts_route_requests_total"])
        routed = {
            (labels["model_version"], labels["route"]): value
            for name, labels, value in samples(page)
            if name == "jts_route_requests_total"
        }
        assert routed == {("1.0", "default"): answers["1.0"], ("2.0", "canary"): answers["2.0"]}

        # promote: set-default of the canary's version ends the canary
        c.set_default("which", "2.0")
        assert c.canary("which")["canary"] is None
        seen = {str(http.post(f"{base}/predictions/which", json=[0]).json()[0]) for _ in range(40)}
        assert seen == {"2.0"}
        assert str(http.post(f"{base}/predictions/which/1.0", json=[0]).json()[0]) == "1.0"

        # canary --off: DELETE ends it; a second DELETE has nothing to end
        c.start_canary("which", "1.0", 50)
        assert c.end_canary("which")["status"].startswith('Canary of model "which"')
        seen = {str(http.post(f"{base}/predictions/which", json=[0]).json()[0]) for _ in range(40)}
        assert seen == {"2.0"}
        with pytest.raises(EngineError) as err:
            c.end_canary("which")
        assert err.value.status == 404

        # bad input gets TorchServe's error shape and the engine keeps serving
        for params, status in (
            ({"version": "1.0", "percent": "100"}, 400),
            ({"version": "1.0"}, 400),
            ({"percent": "20"}, 400),
            ({"version": "7.0", "percent": "20"}, 404),
            ({"version": "2.0", "percent": "20"}, 400),  # the default itself
        ):
            r = c.send(contract.Call("PUT", "management", "/models/which/canary", params))
            assert r.status == status, (params, r.text)
            assert set(json.loads(r.body)) == {"code", "type", "message"}
        assert str(http.post(f"{base}/predictions/which", json=[0]).json()[0]) == "2.0"
        openapi = json.loads(c.send(contract.Call("OPTIONS", "management", "/")).body)
        assert "put" in openapi["paths"]["/models/{model_name}/canary"]
