"""Handlers in archives: built-ins copied as jts_<name>.py, notebook handlers captured by source."""

from __future__ import annotations

import ast
import json
import sys
import zipfile

import pytest
import torch
from _archive_helpers import ipython_shell, run_cell

from jupyter_torchserve.archive import archive
from jupyter_torchserve.archive.handler_spec import BUILTIN_HANDLERS, builtin_dir


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def _files(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _imported_roots(source: bytes) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


def _classes(source: bytes) -> list[str]:
    return [n.name for n in ast.parse(source).body if isinstance(n, ast.ClassDef)]


@pytest.fixture(scope="module")
def shell():
    original_main = sys.modules["__main__"]
    sh = ipython_shell()
    yield sh
    sys.modules["__main__"] = original_main


@pytest.mark.parametrize(
    "name", [h for h in BUILTIN_HANDLERS if (builtin_dir() / f"{h}.py").is_file()]
)
def test_builtin_handler_is_copied(tmp_path, name):
    result = archive(
        Tiny(), "m", handler=name, format="torchscript", export_path=tmp_path, preflight=False
    )
    files = _files(result.path)
    assert result.manifest["model"]["handler"] == f"jts_{name}.py"
    assert files[f"jts_{name}.py"] == (builtin_dir() / f"{name}.py").read_bytes()
    assert files["jts_base.py"] == (builtin_dir() / "jts_base.py").read_bytes()
    assert files["jts_model_loader.py"] == (builtin_dir() / "jts_model_loader.py").read_bytes()
    meta = json.loads(files["MAR-INF/jupyter_torchserve.json"])
    assert meta["builtin_handler"] == name
    for copied in ("jts_model_loader.py", f"jts_{name}.py", "jts_base.py"):
        roots = _imported_roots(files[copied])
        assert not roots & {"jupyter_torchserve", "ts"}, (copied, roots)


def test_default_handler_is_tensor(tmp_path):
    result = archive(Tiny(), "m", format="torchscript", export_path=tmp_path, preflight=False)
    assert result.manifest["model"]["handler"] == "jts_tensor.py"


def test_handler_file_path_with_function(tmp_path):
    handler = tmp_path / "my_handler.py"
    handler.write_text("def entry(data, context):\n    return [1 for _ in data or []]\n")
    result = archive(
        Tiny(),
        "m",
        handler=f"{handler}:entry",
        format="torchscript",
        export_path=tmp_path,
        preflight=False,
    )
    assert result.manifest["model"]["handler"] == "my_handler.py:entry"
    assert _files(result.path)["my_handler.py"] == handler.read_bytes()


@pytest.mark.slow  # runs pip / a pre-flight subprocess
def test_notebook_handler_class_is_captured_and_preflighted(tmp_path, shell):
    run_cell(
        shell,
        """
        import importlib.util, sys, torch
        from jupyter_torchserve.handlers.service import builtin_dir, builtin_handler_path
        # load the built-in as a worker does: a top-level jts_* module beside jts_base
        sys.path.insert(0, builtin_dir())
        spec = importlib.util.spec_from_file_location("jts_tensor", builtin_handler_path("tensor"))
        jts_tensor = sys.modules["jts_tensor"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(jts_tensor)
        TensorHandler = jts_tensor.TensorHandler
        OFFSET = 0.0

        class Clip:
            @staticmethod
            def apply(t):
                return t + OFFSET

        class ClippingHandler(TensorHandler):
            def postprocess(self, output):
                return super().postprocess(Clip.apply(output))
        """,
    )
    result = archive(
        Tiny(),
        "clip",
        handler=shell.user_ns["ClippingHandler"],
        format="torchscript",
        example_inputs=torch.randn(1, 2),
        export_path=tmp_path,
    )
    files = _files(result.path)
    assert result.manifest["model"]["handler"] == "handler.py"
    handler_src = files["handler.py"]
    assert _classes(handler_src) == ["ClippingHandler"]  # TorchServe: exactly one class
    impl = files["jts_handler_impl.py"].decode()
    assert "from jts_tensor import TensorHandler" in impl and "OFFSET = 0.0" in impl
    assert "class Clip" in impl and "jupyter_torchserve.handlers" not in impl
    assert "jts_tensor.py" in files


def test_notebook_handle_function_and_hooks(tmp_path, shell):
    run_cell(
        shell,
        """
        def my_handle(data, context):
            return [len(data)] * len(data) if data else None

        def double(data):
            return [x * 2 for x in data]
        """,
    )
    fn = archive(
        Tiny(),
        "fn",
        handler=shell.user_ns["my_handle"],
        format="torchscript",
        export_path=tmp_path,
        preflight=False,
    )
    src = _files(fn.path)["handler.py"].decode()
    assert "def my_handle(data, context)" in src and "handle = my_handle" in src
    assert _classes(src.encode()) == []
    hooks = archive(
        Tiny(),
        "hooks",
        handler={"postprocess": shell.user_ns["double"]},
        format="torchscript",
        export_path=tmp_path,
        preflight=False,
    )
    files = _files(hooks.path)
    src = files["handler.py"].decode()
    assert _classes(files["handler.py"]) == ["Handler"]
    assert "def postprocess(self, *args):\n        return double(*args)" in src
    assert "from jts_tensor import TensorHandler as _Base" in src


def test_bad_handler_objects(tmp_path):
    with pytest.raises(TypeError, match="handler must be a built-in name, a .py path"):
        archive(Tiny(), "m", handler=42, export_path=tmp_path)
    with pytest.raises(ValueError, match="handler dict keys must be among"):
        archive(Tiny(), "m", handler={"prepare": print}, export_path=tmp_path)
