"""What the browser tests (tests/test_browser_*.py) share: a real `jupyter lab`, a Chromium page
on it with the TorchServe panel open, and where each file's screenshots go.

Each test file keeps its screenshots in its own folder, `test-artifacts/browser/<name>/`
(`sidebar`, `lifecycle`, `dashboard`, `explain`), emptied when that file opens its page. Files
that reuse the sidebar's fixtures (lifecycle, explain) open a page of their own, so whichever
file runs later no longer deletes an earlier file's screenshots.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from _serverext_helpers import RealEngine, _env, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
PANEL = "jupyter-torchserve-panel"

#: Every browser test file's `pytestmark`: slow, browser, and skipped without Chromium.
BROWSER_MARKS = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"{CHROMIUM} is absent: `apt-get install -y chromium` to run the browser tests",
    ),
]

#: The screenshot folder of each open page (see `open_page`), which `shot` writes into.
_FOLDERS: dict[Any, Path] = {}


# pytest-jupyter's autouse fixtures close a per-test event loop; the module's sync Playwright
# keeps its own loop running across tests, and nothing here uses an in-process Jupyter server.
@pytest.fixture
def jp_asyncio_loop() -> None:
    return None


@pytest.fixture
def jp_server_cleanup() -> None:
    return None


@cache
def _mnist_model() -> Any:
    """The digits CNN every browser engine deploys as `mnist`, trained once per session (the
    engines only read it: deploy and archive it)."""
    from jupyter_torchserve.examples import mnist

    return mnist.trained_model(epochs=3)


@contextmanager
def _mnist_engine(root: Path) -> Iterator[RealEngine]:
    """A real engine under `root` with `mnist` deployed; stopped on exit, with any engine the
    panel's Start button started in its runtime dir (the sidebar's stop-and-start test)."""
    eng = RealEngine(root).start(deploy=False)
    try:
        with _env(JUPYTER_RUNTIME_DIR=str(eng.runtime_dir)):
            eng.deploy_mnist(_mnist_model())
        yield eng
    finally:
        eng.stop()
        from jupyter_torchserve import launcher

        with _env(JUPYTER_RUNTIME_DIR=str(eng.runtime_dir)):
            for _ in range(3):
                if not launcher.stop_engine():
                    break


@pytest.fixture(scope="module", name="engine")
def browser_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealEngine]:
    """`engine`: a real engine with `mnist` deployed, for the module's lab to find (named
    apart so that a test file importing it may take `engine` as a parameter)."""
    with _mnist_engine(tmp_path_factory.mktemp("browser-engine")) as eng:
        yield eng


#: The engine and lab that `shared_lab` hands out, open until `release_shared` closes them.
_SHARED: dict[str, Any] = {}
_SHARED_STACK = ExitStack()
atexit.register(_SHARED_STACK.close)  # a run cut short (-x, Ctrl-C) leaves no lab or engine


@pytest.fixture(scope="module")
def shared_lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One engine with `mnist` and one `jupyter lab` on it (base URL, token, sampling the engine
    every second for the dashboard), shared by the files whose tests only read that state and
    add requests (dashboard, explain): the lab's dict, its engine under "engine".

    Started by the first test that asks for it and closed after the last consecutive one
    (tests/conftest.py calls `release_shared` after each test's teardown), so it does not
    outlive them; a later test that asks again gets a fresh pair.
    """
    if not _SHARED:
        eng = _SHARED_STACK.enter_context(_mnist_engine(tmp_path_factory.mktemp("shared-engine")))
        root = tmp_path_factory.mktemp("shared-lab")
        settings = {"dashboard_interval": 1.0}
        lab = _SHARED_STACK.enter_context(
            start_lab(eng, root, base="/jts-shared/", settings=settings)
        )
        _SHARED.update(lab, engine=eng)
    return _SHARED


def release_shared(nextitem: pytest.Item | None) -> None:
    """Close the shared engine and lab unless the next test uses them."""
    if _SHARED and (nextitem is None or "shared_lab" not in nextitem.fixturenames):
        _SHARED.clear()
        _SHARED_STACK.close()


@contextmanager
def start_lab(
    engine: RealEngine, root: Path, *, base: str, settings: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """`jupyter lab` on a free loopback port under the base URL `base`, with a token, finding
    `engine` through its runtime dir; `settings` is the server's `JupyterTorchServe` config.

    The workspace and settings dirs are fresh under `root` (also the Jupyter root), so no
    panel or theme is remembered from an earlier run. Yields the lab's url, token, root and
    log file; stops the lab on exit.
    """
    port = free_port()
    token = secrets.token_hex(16)
    config_dir = root / "config"
    config_dir.mkdir()
    (config_dir / "jupyter_server_config.json").write_text(
        json.dumps({"JupyterTorchServe": settings})
    )
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(engine.runtime_dir),
        "JUPYTER_CONFIG_PATH": os.pathsep.join(
            p for p in (str(config_dir), os.environ.get("JUPYTER_CONFIG_PATH", "")) if p
        ),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces"),
        "JUPYTERLAB_SETTINGS_DIR": str(root / "settings"),
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--ServerApp.base_url={base}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_root=True",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log_path = root / "lab.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}{base}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "api/status", params={"token": token}, timeout=2).ok:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            raise RuntimeError(log_path.read_text())
        time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError("jupyter lab did not start:\n" + log_path.read_text())
    try:
        yield {"url": url, "token": token, "root": root, "log": log_path}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def screenshot_folder(module: ModuleType) -> Path:
    """`test-artifacts/browser/<name>/` for tests/test_browser_<name>.py, emptied of an earlier
    run's screenshots (no stale one from an earlier layout)."""
    name = Path(str(module.__file__)).stem.removeprefix("test_browser_")
    folder = ARTIFACTS / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@contextmanager
def open_page(
    lab: dict[str, Any],
    module: ModuleType,
    *,
    height: int,
    timeout_ms: int,
    clipboard: bool = False,
) -> Iterator[Any]:
    """One headless Chromium page on `lab` with the TorchServe panel open, its screenshots
    going to `module`'s folder; `clipboard` grants read and write (Copy curl)."""
    from playwright.sync_api import sync_playwright

    folder = screenshot_folder(module)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": height})
        if clipboard:
            context.grant_permissions(["clipboard-read", "clipboard-write"])
        pg = context.new_page()
        pg.set_default_timeout(timeout_ms)
        pg.goto(f"{lab['url']}lab?token={lab['token']}")
        pg.wait_for_selector(f'.jp-SideBar.jp-mod-left [data-id="{PANEL}"]', timeout=60000)
        if not pg.locator(f"#{PANEL}").is_visible():
            pg.click(f'.jp-SideBar.jp-mod-left [data-id="{PANEL}"]')
        _FOLDERS[pg] = folder
        try:
            yield pg
        finally:
            del _FOLDERS[pg]
            browser.close()


def screenshots(page: Any) -> Path:
    """The folder `page`'s screenshots go to (its test file's own)."""
    return _FOLDERS[page]


def shot(page: Any, name: str, *, full: bool = False) -> None:
    """The panel alone (readable), or the whole window (dialogs, theme)."""
    path = str(screenshots(page) / f"{name}.png")
    if full:
        # JupyterLab's "Jupyter news?" toast is no part of the sidebar: hide it (a modal dialog
        # may be open, so it cannot be clicked away)
        page.evaluate(
            """() => document.querySelectorAll('.Toastify__toast').forEach(t => {
                if (t.textContent.includes('Jupyter news')) { t.style.display = 'none'; }
            })"""
        )
        page.screenshot(path=path)
    else:
        page.locator(f"#{PANEL}").screenshot(path=path)


def open_tab(page: Any, tab: str) -> None:
    page.get_by_role("tab", name=f"{tab} tab").click()


def jupyter_get(lab: dict[str, Any], path: str) -> Any:
    """GET a Jupyter route of `lab` with its token, as JSON."""
    r = requests.get(
        lab["url"] + path, headers={"Authorization": f"token {lab['token']}"}, timeout=30
    )
    r.raise_for_status()
    return r.json()
