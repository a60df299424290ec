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
