"""`jupyter-torchserve` without a command it knows: the commands, and (for a typo) why."""

from __future__ import annotations

import pytest

from jupyter_torchserve.cli import TorchServeApp


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    app = TorchServeApp()
    with pytest.raises(SystemExit) as e:
        app.initialize(argv)
        app.start()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_a_typo_lists_the_commands_and_says_which_word_was_not_one(capsys) -> None:
    code, out, err = run(["strat"], capsys)
    assert code == 1 and "start" in out and "export" in out
    assert err.strip() == "error: unknown command 'strat'"


def test_no_command_lists_them_without_an_error_line(capsys) -> None:
    code, out, err = run([], capsys)
    assert code == 1 and "start" in out and err == ""
