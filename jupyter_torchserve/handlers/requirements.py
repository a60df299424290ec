"""Per-model requirements (TorchServe's ``install_py_dep_per_model``), installed in isolation.

A model's ``requirementsFile`` is installed with ``pip --target`` into a directory that only
that model's workers put on ``sys.path``, so two models never fight over versions and the
engine's own environment is never modified. A failing install is raised with pip's own last
lines, because the alternative (a worker that dies on ``ImportError`` later) hides the cause.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


class RequirementsInstallError(RuntimeError):
    """pip could not install a model's requirements file; the message ends with pip's output."""


def requirements_file(model_dir: str) -> str | None:
    """The archive's requirements file: the manifest's ``requirementsFile`` or ``requirements.txt``."""
    name = None
    manifest_path = os.path.join(model_dir, "MAR-INF", "MANIFEST.json")
    if os.path.isfile(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
        name = (manifest.get("model") or {}).get("requirementsFile")
    path = os.path.join(model_dir, name or "requirements.txt")
    return path if os.path.isfile(path) else None


def install_requirements(model_dir: str, target_dir: str, *, timeout: float = 900.0) -> None:
    """Install the archive's requirements into ``target_dir`` (no-op when it has none)."""
    path = requirements_file(model_dir)
    if path is None:
        return
    os.makedirs(target_dir, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--target",
        target_dir,
        "-r",
        path,
    ]
    try:
        proc = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            cwd=model_dir,
        )
    except subprocess.TimeoutExpired as exc:
        raise RequirementsInstallError(
            f"installing {os.path.basename(path)} timed out after {timeout:.0f} s"
        ) from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout or "").strip().splitlines()[-15:])
        raise RequirementsInstallError(
            f"pip could not install the model's requirements from {os.path.basename(path)} "
            f"(exit code {proc.returncode}):\n{tail}"
        )
