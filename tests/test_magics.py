"""%torchserve in a real IPython InteractiveShell: parsing, errors and the full model life cycle."""

from __future__ import annotations

from typing import Any

import pytest
from _notebook_helpers import engine, mnist_data, mnist_model, ts_env  # noqa: F401
from IPython.core.error import UsageError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def ip(ts_env: dict[str, Any]) -> Any:  # noqa: F811
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "jupyter_torchserve")
    return shell


def run(ip: Any, code: str) -> Any:
    return ip.run_cell(code, store_history=False)


# -- parsing (no engine) -----------------------------------------------------------------------
def test_help_lists_every_subcommand(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    res = run(ip, "%torchserve --help")
    assert res.success
    out = capsys.readouterr().out
    for cmd in (
        "deploy", "archive", "start", "stop", "status", "list", "describe", "scale",
        "predict", "explain", "logs", "metrics", "set-default", "unregister", "canary",
        "promote", "compare", "export",
    ):  # fmt: skip
        assert cmd in out


def test_subcommand_help(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    res = run(ip, "%torchserve deploy --help")
    assert res.success
    out = capsys.readouterr().out
    assert "--max-batch-delay" in out and "--replace" in out and "--gpu" in out


@pytest.mark.parametrize(
    "line, needle",
    [
        ("%torchserve deploy model --workers x", "invalid int value"),
        ("%torchserve deploy model", "--name"),
        ("%torchserve scale mnist", "one of the arguments --workers --min is required"),
        ("%torchserve frobnicate", "invalid choice"),
        ("%torchserve deploy model --gpu --cpu --name m", "not allowed with"),
        ("%torchserve predict mnist", "FILE or --data"),
        ("%torchserve deploy nope --name m", "NameError"),
    ],
)
def test_bad_arguments_print_usage_not_tracebacks(
    ip: Any, capsys: pytest.CaptureFixture[str], line: str, needle: str
) -> None:
    res = run(ip, line)
    assert isinstance(res.error_in_exec, UsageError)
    captured = capsys.readouterr()
    text = str(res.error_in_exec) + captured.out + captured.err
    assert needle in text
    assert "Traceback" not in text


def test_engine_not_running_says_how_to_start(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from jupyter_torchserve.api import EngineUnavailable
    from jupyter_torchserve.display import HOW_TO_START

    for line in ("%torchserve list", "%torchserve export mnist --to torchserve"):
        res = run(ip, line)
        assert isinstance(res.error_in_exec, EngineUnavailable), line
        said = str(res.error_in_exec)
        assert said.count("Start one with") == 1 and "%torchserve start" in said, said
    assert "Traceback" not in capsys.readouterr().out
    res = run(ip, "%torchserve status")
    assert "No jupyter_torchserve engine is running" in repr(res.result)
    assert HOW_TO_START in repr(res.result)  # the status says it as the errors do


# -- with an engine ----------------------------------------------------------------------------
def test_start_reuses_running_engine(ip: Any, engine: dict, capsys) -> None:  # noqa: F811
    res = run(ip, "%torchserve start")
    assert res.success
    assert f"Already running: engine pid {engine['pid']}" in capsys.readouterr().out
    assert res.result.info["pid"] == engine["pid"]


def test_mnist_life_cycle(
    ip: Any,
    engine: dict,  # noqa: F811
    mnist_data: Any,  # noqa: F811
    mnist_model: Any,  # noqa: F811
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """deploy → predict (3 protocols) → scale → version 2.0 → set-default → unregister."""
    from jupyter_torchserve.examples import mnist

    ip.user_ns.update(
        model=mnist_model,
        example=mnist.png_bytes(mnist.digit_image(3, mnist_data)),
        extra={"index_to_name.json": mnist.LABELS},
        cfg={"mean": mnist.MEAN, "std": mnist.STD},
    )
    for digit in (3, 7):
        mnist.save_digit_png(tmp_path / f"digit{digit}.png", digit, mnist_data)
    opts = "--handler image_classifier --example example --extra-files extra --handler-config cfg"
    res = run(ip, f"d = %torchserve deploy model --name mnist {opts}")
    assert res.success, res.error_in_exec
    dep = ip.user_ns["d"]
    assert dep.parity.ok and dep.parity.max_abs_diff < 1e-4
    assert dep.is_default and dep.version == "1.0"
    assert "✓ parity check" in capsys.readouterr().out  # plain-text progress

    answer = run(ip, f"%torchserve predict mnist {tmp_path / 'digit7.png'}").result
    assert max(answer, key=answer.get) == "7" and len(answer) == 5
    v1 = run(ip, f"%torchserve predict mnist {tmp_path / 'digit3.png'} --protocol v1").result
    top = v1["predictions"][0]
    assert max(top, key=top.get) == "3"
    v2 = run(ip, f"%torchserve predict mnist {tmp_path / 'digit7.png'} --protocol v2").result
    assert '"7"' in str(v2["outputs"][0]["data"][0])

    res = run(ip, "%torchserve deploy model --name mnist " + opts)
    assert "--replace" in str(res.error_in_exec) and "--version" in str(res.error_in_exec)

    assert "Workers scaled to 2" in repr(run(ip, "%torchserve scale mnist --workers 2").result)
    desc = run(ip, "%torchserve describe mnist").result
    workers = desc.versions[0]["workers"]
    assert len(workers) == 2 and all(w["status"] == "READY" for w in workers)
    assert "<table" in desc._repr_html_() and "READY" in repr(desc)

    res = run(ip, f"%torchserve deploy model --name mnist --version 2.0 {opts}")
    assert res.success, res.error_in_exec
    listing = run(ip, "%torchserve list").result
    rows = listing.table()[1]
    assert [r[1] for r in rows] == ["1.0", "2.0"]
    assert "Default version successfully updated" in repr(
        run(ip, "%torchserve set-default mnist 2.0").result
    )
    desc = run(ip, "%torchserve describe mnist --all").result
    assert {d["modelVersion"] for d in desc.versions} == {"1.0", "2.0"}

    status = run(ip, "%torchserve status").result
    assert "mnist" in repr(status) and "<table" in status._repr_html_()
    metrics = run(ip, "%torchserve metrics --model mnist").result
    assert metrics.value("ts_inference_requests_total", model_name="mnist") >= 3
    assert "ts_inference_requests_total" in metrics._repr_html_()
    logs = run(ip, "%torchserve logs mnist --tail 20").result
    assert isinstance(logs.text, str)

    assert "unregistered" in repr(run(ip, "%torchserve unregister mnist --version 1.0").result)
    assert "unregistered" in repr(run(ip, "%torchserve unregister mnist").result)
    res = run(ip, "%torchserve describe mnist")
    assert "404" in str(res.error_in_exec)


def test_parity_fails_when_served_model_differs(ip: Any, engine: dict) -> None:  # noqa: F811
    """A handler that perturbs the output is caught by the parity check, as a clean error."""
    import torch

    from jupyter_torchserve.api import ParityError

    run(
        ip,
        """
import torch
from jupyter_torchserve.handlers.builtins import TensorHandler

class Perturbed(TensorHandler):
    def postprocess(self, output):
        return super().postprocess(output + 0.5)

lin = torch.nn.Linear(3, 2)
x = torch.ones(1, 3)
""",
    )
    res = run(ip, "%torchserve deploy lin --name perturbed --handler Perturbed --example x")
    assert isinstance(res.error_in_exec, ParityError)
    assert "answers differently" in str(res.error_in_exec)
    assert res.error_in_exec.deployment.parity.max_abs_diff == pytest.approx(0.5, abs=1e-5)
    assert torch.is_tensor(ip.user_ns["x"])
    # still registered, so the user can look at it; --replace with a fair handler passes
    res = run(ip, "d2 = %torchserve deploy lin --name perturbed --example x --replace")
    assert res.success, res.error_in_exec
    assert ip.user_ns["d2"].parity.ok and ip.user_ns["d2"].replaced
    run(ip, "%torchserve unregister perturbed")


def test_handler_exception_traceback_in_cell(
    ip: Any,
    engine: dict,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    run(
        ip,
        """
import torch

def preprocess(data):
    raise ValueError("bad pixel in request")

broken = torch.nn.Linear(2, 2)
hooks = {"preprocess": preprocess}
""",
    )
    res = run(
        ip,
        "%torchserve deploy broken --name broken --handler hooks --no-parity",
    )
    assert res.success, res.error_in_exec
    res = run(ip, '%torchserve predict broken --data "[[1.0, 2.0]]"')
    err = res.error_in_exec
    assert err is not None and "bad pixel in request" in str(err)
    assert "ValueError" in str(err)
    lines = err._render_traceback_()
    assert any("bad pixel" in line for line in lines)
    run(ip, "%torchserve unregister broken")


def test_archive_without_serving(ip: Any, tmp_path: Any) -> None:
    run(ip, "import torch\nsmall = torch.nn.Linear(2, 1)\nxs = torch.ones(1, 2)")
    res = run(ip, f"%torchserve archive small --name small --example xs --export-path {tmp_path}")
    assert res.success, res.error_in_exec
    assert (tmp_path / "small.mar").is_file()
    assert "pre-flight max abs diff" in repr(res.result)


def test_explain_and_predict_with_data(ip: Any, engine: dict) -> None:  # noqa: F811
    run(ip, "import torch\nexp = torch.nn.Linear(3, 2)\nxe = torch.ones(1, 3)")
    assert run(ip, "%torchserve deploy exp --name explained --example xe").success
    res = run(ip, "%torchserve predict explained --data xe")
    assert res.success, res.error_in_exec
    res = run(ip, "%torchserve explain explained --data xe")
    assert res.success, res.error_in_exec
    shown = res.result
    assert shown.attributions.numel() == 3 and shown.target in (0, 1)
    assert shown.raw and "image/png" in shown._repr_mimebundle_()
    run(ip, "%torchserve unregister explained")
