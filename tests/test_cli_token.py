"""`jupyter-torchserve token`: the key for curl, or one clear line saying why there is none.

The discovery file names this very process (alive), so no engine has to run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from jupyter_torchserve import discovery
from jupyter_torchserve.cli import TokenApp

KEYS = {
    "management": {"key": "M-key", "expiration time": "never"},
    "inference": {"key": "I-key", "expiration time": "never"},
    "API": {"key": "A-key"},
}


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    return tmp_path


def announce(key_file: Path | None) -> None:
    discovery.write_discovery(
        {"pid": os.getpid(), "started": time.time(), "key_file": key_file and str(key_file)}
    )


def token(*argv: str) -> int:
    app = TokenApp()
    app.initialize(list(argv))
    try:
        app.start()
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


@pytest.mark.parametrize(
    ("argv", "key"),
    [((), "M-key"), (("--type=inference",), "I-key"), (("--type=API",), "A-key")],
)
def test_prints_the_key(
    runtime: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], key: str
) -> None:
    (runtime / "key_file.json").write_text(json.dumps(KEYS))
    announce(runtime / "key_file.json")
    assert token(*argv) == 0
    assert capsys.readouterr().out == key + "\n"


def test_missing_key_file_is_one_clear_line(
    runtime: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    announce(runtime / "gone" / "key_file.json")
    assert token() == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert "key file" in out.err and "missing" in out.err and "Traceback" not in out.err


@pytest.mark.parametrize(
    ("setup", "argv", "code", "says"),
    [
        ("none", (), 1, "no engine is running"),
        ("auth-off", (), 1, "token authorization is off"),
        ("keys", ("--type=root",), 2, "--type must be one of management, inference, API"),
    ],
)
def test_no_key_to_print(
    runtime: Path,
    capsys: pytest.CaptureFixture[str],
    setup: str,
    argv: tuple[str, ...],
    code: int,
    says: str,
) -> None:
    if setup == "auth-off":
        announce(None)
    elif setup == "keys":
        (runtime / "key_file.json").write_text(json.dumps(KEYS))
        announce(runtime / "key_file.json")
    assert token(*argv) == code
    assert says in capsys.readouterr().err
