"""A state dir that cannot be made or written is refused with one line that names it, by
every way of starting an engine, before anything starts; not a FileNotFoundError traceback
from deep in the start (as before)."""

from __future__ import annotations

import pytest

from jupyter_torchserve.cli import TorchServeApp
from jupyter_torchserve.config import EngineConfig, StateDirUnusable
from jupyter_torchserve.launcher import EngineStartError, start_engine

UNUSABLE = "/proc/no-such-dir"  # /proc takes no new folder, even from root
WHY = f"cannot use {UNUSABLE} as the engine's state dir (state_dir): No such file or directory"


def test_the_config_refuses_it_naming_the_folder_and_why() -> None:
    with pytest.raises(StateDirUnusable) as e:
        EngineConfig(state_dir=UNUSABLE).resolved_state_dir()
    assert str(e.value) == WHY


def test_a_start_from_python_says_so_before_it_starts_anything() -> None:
    with pytest.raises(EngineStartError) as e:
        start_engine(state_dir=UNUSABLE)
    assert str(e.value) == WHY


@pytest.mark.parametrize("foreground", [False, True])
def test_the_cli_prints_one_line_and_exits_1(foreground: bool, capsys) -> None:
    argv = ["start", f"--state-dir={UNUSABLE}"] + (["--foreground"] if foreground else [])
    app = TorchServeApp()
    with pytest.raises(SystemExit) as e:
        app.initialize(argv)
        app.start()
    assert e.value.code == 1
    assert capsys.readouterr().err.strip() == WHY
