"""TorchServe's management API where clients and scripts depend on it, sent as curl and
requests send it: register starts no worker unless asked, an invalid handler registers until a
worker starts, `startup_timeout` fails the register with TorchServe's error, a trailing slash
addresses the same resource, and a model-store entry that is a symlink is followed."""

from __future__ import annotations

import os
import textwrap

import pytest
import requests
from _engine_helpers import manifest, model_store, running_engine, write_mar

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # starts real processes

SLOW_LOAD = textwrap.dedent("""
    import time

    def handle(data, context):
        if data is None:
            time.sleep(30)  # initialisation: longer than the register's startup_timeout
            return None
        return ["late"] * len(data)
""")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("mgmt-fidelity")
    store = model_store(tmp, "probe", "other")
    write_mar(
        store / "bad.mar",
        {"dummy.txt": "x"},
        manifest("bad", "1.0", "dummy.txt", "no_such_module:handle"),
    )
    write_mar(
        store / "slow.mar",
        {"slow_handler.py": SLOW_LOAD, "dummy.txt": "x"},
        manifest("slow", "1.0", "dummy.txt", "slow_handler.py"),
    )
    outside = tmp / "elsewhere"
    outside.mkdir()
    (store / "probe-1.0.mar").rename(outside / "probe-1.0.mar")
    os.symlink(outside / "probe-1.0.mar", store / "linked.mar")
    with running_engine(tmp, model_store=str(store)) as (info, client):
        headers = {"Authorization": f"Bearer {client.token}"}
        yield info["management_address"], info["inference_address"], headers


def test_register_without_initial_workers_starts_none_and_scale_gives_what_was_asked(engine):
    mgmt, inference, auth = engine
    r = requests.post(f"{mgmt}/models?url=other-1.0.mar", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == (
        'Model "other" Version: 1.0 registered with 0 initial workers. '
        "Use scale workers API to add workers for the model."
    )
    (desc,) = requests.get(f"{mgmt}/models/other", headers=auth).json()
    assert desc["workers"] == [] and desc["minWorkers"] == 0
    r = requests.put(f"{mgmt}/models/other?min_worker=2&synchronous=true", headers=auth)
    assert r.status_code == 200, r.text
    (desc,) = requests.get(f"{mgmt}/models/other/", headers=auth).json()  # trailing slash
    assert len(desc["workers"]) == 2
    # a trailing slash addresses the same resource: TorchServe's unregister call
    r = requests.delete(f"{mgmt}/models/other/", headers=auth)
    assert r.status_code == 200 and "unregistered" in r.json()["status"]
    assert requests.get(f"{mgmt}/models/other", headers=auth).status_code == 404
    assert requests.get(f"{inference}/ping/").json() == {"status": "Healthy"}


def test_an_invalid_handler_registers_until_a_worker_starts(engine):
    mgmt, _, auth = engine
    r = requests.post(f"{mgmt}/models?url=bad.mar", headers=auth)
    assert r.status_code == 200, r.text
    r = requests.put(f"{mgmt}/models/bad?min_worker=1&synchronous=true", headers=auth)
    assert r.status_code >= 400
    assert requests.delete(f"{mgmt}/models/bad", headers=auth).status_code == 200


def test_startup_timeout_fails_the_register_with_torchserves_error(engine):
    mgmt, _, auth = engine
    r = requests.post(
        f"{mgmt}/models?url=slow.mar&initial_workers=1&startup_timeout=2", headers=auth
    )
    assert r.status_code == 500, r.text
    body = r.json()
    assert body["type"] == "InternalServerException"
    assert body["message"].startswith("Failed to start workers for model slow version: 1.0")
    assert requests.get(f"{mgmt}/models/slow", headers=auth).status_code == 404  # rolled back


def test_a_store_entry_that_is_a_symlink_is_followed(engine):
    mgmt, inference, auth = engine
    r = requests.post(f"{mgmt}/models?url=linked.mar&initial_workers=1", headers=auth)
    assert r.status_code == 200, r.text
    r = requests.post(f"{inference}/predictions/probe", json={"echo": "via link"})
    assert r.status_code == 200 and r.json()["echo"] == "via link"
    # what a request names still cannot leave the store
    r = requests.post(f"{mgmt}/models?url=../elsewhere/probe-1.0.mar", headers=auth)
    assert r.status_code == 404
    assert requests.delete(f"{mgmt}/models/probe", headers=auth).status_code == 200
