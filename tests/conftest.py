"""Shared fixtures: pytest-jupyter's server fixtures, and private Jupyter dirs for the session.

Every engine a test starts writes its discovery file and state under a temporary
JUPYTER_RUNTIME_DIR / JUPYTER_DATA_DIR, so the suite never finds, reuses or stops an engine a
user has running on the same machine.
"""

import os

import pytest

pytest_plugins = ("pytest_jupyter.jupyter_server",)


@pytest.fixture(scope="session", autouse=True)
def _private_jupyter_dirs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("jupyter")
    saved = {k: os.environ.get(k) for k in ("JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR")}
    os.environ["JUPYTER_RUNTIME_DIR"] = str(root / "runtime")
    os.environ["JUPYTER_DATA_DIR"] = str(root / "data")
    yield root
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _no_engine_pinned_from_an_earlier_test():
    """Each test starts as a fresh kernel does: pinned to no engine (`api.use`/`start` pin
    one for the rest of a kernel's life, and an earlier test's engine is gone by now)."""
    import sys

    api = sys.modules.get("jupyter_torchserve.api")
    if api is not None:
        api._pinned = None
    yield


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """After a test's fixtures are torn down: close the browser tests' shared engine and lab
    (tests/_browser_helpers.py) once the next test no longer uses them."""
    import sys

    helpers = sys.modules.get("_browser_helpers")
    if helpers is not None:
        helpers.release_shared(nextitem)
