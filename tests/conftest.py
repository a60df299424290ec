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


#: The built-in handler modules as a kernel has them (`handlers.builtins`), by name
_KERNEL_BUILTINS: dict = {}


@pytest.fixture(scope="session", autouse=True)
def _builtin_handler_modules() -> None:
    import sys

    import jupyter_torchserve.handlers.builtins  # noqa: F401 - loads them as jts_* modules

    _KERNEL_BUILTINS.update((n, m) for n, m in sys.modules.items() if n.startswith("jts_"))


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """After a test's fixtures are torn down: close the browser tests' shared engine and lab
    (tests/_browser_helpers.py) once the next test no longer uses them; and put back the
    kernel's built-in handler modules.

    A worker loads one archive in its own process; a test that calls `load_service` in this
    one leaves the archive's copies in `sys.modules` (`jts_base`, ...), and a later in-process
    archive of a built-in subclass would then take `JtsBaseHandler` for notebook code."""
    import sys

    helpers = sys.modules.get("_browser_helpers")
    if helpers is not None:
        helpers.release_shared(nextitem)
    sys.modules.update(_KERNEL_BUILTINS)
