"""load_service / Service.predict: entry points, decoding, errors, serialisation, streaming."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
import torch
from _handler_helpers import make_model_dir, request, write_manifest

from jupyter_torchserve.handlers.resolve import served_builtin
from jupyter_torchserve.handlers.service import (
    HandlerError,
    HandlerLoadError,
    RequestInput,
    RequirementsInstallError,
    install_requirements,
    load_service,
)


def _handler_dir(tmp_path, source: str, handler: str = "handler.py", name: str = "h"):
    model_dir = tmp_path / name
    model_dir.mkdir()
    (model_dir / handler.split(":")[0]).write_text(textwrap.dedent(source))
    write_manifest(model_dir, name=name, serialized="none.pt", handler=handler)
    return model_dir


ECHO_FUNCTION = """
    STATE = {}

    def handle(data, context):
        if data is None:
            STATE["initialised"] = context.system_properties["batch_size"]
            return None
        return [
            {"echo": row["body"] if not isinstance(row["body"], bytes) else row["body"].hex(),
             "init": STATE["initialised"]}
            for row in data
        ]
"""


def test_module_handle_function_is_initialised_with_none(tmp_path):
    svc = load_service(str(_handler_dir(tmp_path, ECHO_FUNCTION)), batch_size=3)
    out = svc.predict(
        [request({"a": 1}), request("hi", "text/plain"), request(b"\x00", "image/png")]
    )
    bodies = [json.loads(o.body) for o in out]
    assert bodies[0] == {"echo": {"a": 1}, "init": 3}  # application/json arrives parsed
    assert bodies[1]["echo"] == "hi"  # text/* arrives as str
    assert bodies[2]["echo"] == "00"  # anything else as bytes
    assert svc.describe() is None


def test_module_colon_function_entry_point(tmp_path):
    source = """
        def handle(data, context):
            raise AssertionError("not this one")

        def mine(data, context):
            if data is None:
                return None
            return [type(row["body"]).__name__ for row in data]
    """
    svc = load_service(str(_handler_dir(tmp_path, source, "handler.py:mine")))
    out = svc.predict([request(b"\x01\x02", "application/octet-stream")])
    assert out[0].body == b"bytes"
    assert out[0].content_type.startswith("text/plain")


def test_single_class_is_instantiated_and_initialised(tmp_path):
    source = """
        from collections import OrderedDict  # imported classes do not count

        class Doubler:
            def initialize(self, context):
                self.factor = 2
                self.model_dir = context.system_properties["model_dir"]

            def handle(self, data, context):
                return [row["body"]["x"] * self.factor for row in data]

            def describe_handle(self):
                return {"factor": self.factor}
    """
    svc = load_service(str(_handler_dir(tmp_path, source)))
    out = svc.predict([request({"x": 2}), request({"x": 5})])
    assert [json.loads(o.body) for o in out] == [4, 10]
    assert svc.describe() == {"factor": 2}


def test_two_classes_is_a_clear_error(tmp_path):
    source = """
        class A:
            def handle(self, data, context):
                return data

        class B:
            pass
    """
    with pytest.raises(HandlerLoadError, match="exactly one class.*2 classes \\(A, B\\)"):
        load_service(str(_handler_dir(tmp_path, source)))


def test_unknown_handler_name(tmp_path):
    model_dir = tmp_path / "x"
    model_dir.mkdir()
    write_manifest(model_dir, name="x", serialized="m.pt", handler="no_such_handler_xyz")
    with pytest.raises(HandlerLoadError, match="neither a file of the archive nor a built-in"):
        load_service(str(model_dir))


def test_builtin_name_is_served_by_our_builtin(tmp_path):
    model_dir = make_model_dir(tmp_path, torch.nn.Linear(2, 1), handler="tensor")
    svc = load_service(str(model_dir))
    assert type(svc.handler_instance).__name__ == "TensorHandler"
    # the register-time handler override wins over the manifest
    svc = load_service(str(model_dir), handler="tensor")
    assert json.loads(svc.predict([request([[1.0, 2.0]])])[0].body)


def test_served_builtin_names_the_builtin_that_load_service_loads(tmp_path):
    """The engine (which imports no torch) asks served_builtin which built-in a handler
    named at registration loads; the worker's load_service must load that one. The
    archive's jts_ copy and a bare built-in name are the built-in, any other file of the
    archive (even one named like a built-in) is the archive's own code."""
    own = "def handle(data, context):\n    return data and [1]\n"
    model_dir = make_model_dir(
        tmp_path,
        torch.nn.Linear(2, 1),
        copy_builtin=True,
        files={"handler.py": own, "text_classifier.py": own},
    )
    for handler, builtin in [
        ("jts_tensor.py", "tensor"),
        ("tensor", "tensor"),
        ("/anywhere/jts_tensor.py:handle", "tensor"),
        ("handler.py", None),
        ("text_classifier", None),
        ("object_detector", "object_detector"),
        ("jts_base.py", None),
    ]:
        assert served_builtin(str(model_dir), handler) == builtin, handler
    for handler in ("jts_tensor.py", "tensor"):
        svc = load_service(str(model_dir), handler=handler)
        assert type(svc.handler_instance).__name__ == "TensorHandler"
    for handler in ("handler.py", "text_classifier"):
        assert load_service(str(model_dir), handler=handler).handler_instance is None


def test_handler_exception_becomes_handler_error_with_traceback(tmp_path):
    source = """
        def handle(data, context):
            if data is None:
                return None
            raise ValueError("bad pixel")
    """
    svc = load_service(str(_handler_dir(tmp_path, source)))
    with pytest.raises(HandlerError) as info:
        svc.predict([request({})])
    assert "ValueError: bad pixel" in info.value.message
    assert "Traceback" in info.value.traceback_text and "bad pixel" in info.value.traceback_text
    assert info.value.status == 503


def test_initialize_failure_is_a_load_error(tmp_path):
    source = """
        class H:
            def initialize(self, context):
                raise RuntimeError("no weights")
            def handle(self, data, context):
                return data
    """
    with pytest.raises(HandlerLoadError, match="no weights") as info:
        load_service(str(_handler_dir(tmp_path, source)))
    assert "Traceback" in info.value.traceback_text


def test_wrong_output_length_and_type(tmp_path):
    source = """
        def handle(data, context):
            if data is None:
                return None
            if len(data) == 1:
                return "not a list"
            return [1]
    """
    svc = load_service(str(_handler_dir(tmp_path, source)))
    with pytest.raises(HandlerError, match="not a list"):
        svc.predict([request({})])
    with pytest.raises(HandlerError, match="batch has 2 requests but the handler returned 1"):
        svc.predict([request({}), request({})])


def test_prediction_exception_code_is_kept(tmp_path):
    source = """
        from ts.utils.util import PredictionException

        def handle(data, context):
            if data is None:
                return None
            raise PredictionException("too big", 413)
    """
    svc = load_service(str(_handler_dir(tmp_path, source)))
    with pytest.raises(HandlerError) as info:
        svc.predict([request({})])
    assert info.value.status == 413


PICKY = """
    from ts.handler_utils.utils import send_intermediate_predict_response
    from ts.utils.util import PredictionException

    def handle(data, context):
        if data is None:
            return None
        if context.get_request_header(0, "stream"):
            send_intermediate_predict_response(
                ["chunk"] * len(data), context.request_ids, "Intermediate", 200, context
            )
        for row in data:
            if row["body"].get("oom"):
                raise MemoryError("no room")
            if row["body"].get("bad"):
                raise PredictionException(f"request {row['body']['bad']} is bad", 400)
        return [row["body"]["x"] * 2 for row in data]
"""


def test_a_failed_batch_answers_each_request_alone(tmp_path):
    # one bad request must not fail the requests it happened to be batched with, nor give
    # them its message: each gets its own answer, the bad ones each their own error
    svc = load_service(str(_handler_dir(tmp_path, PICKY)))
    batch = [request({"x": 1}), request({"bad": "b1"}), request({"x": 3}), request({"bad": "b2"})]
    out = svc.predict_each(batch)
    assert [json.loads(o.body) for o in (out[0], out[2])] == [2, 6]
    assert [(o.status, o.message) for o in (out[1], out[3])] == [
        (400, "PredictionException: request b1 is bad : 400"),
        (400, "PredictionException: request b2 is bad : 400"),
    ]
    # a batch that is fine runs once, as a batch
    assert [json.loads(o.body) for o in svc.predict_each(batch[::2])] == [2, 6]


def test_what_is_not_retried_alone_fails_as_one(tmp_path):
    svc = load_service(str(_handler_dir(tmp_path, PICKY)))
    # out of memory: the batch is what did not fit, and the engine judges its worker by it
    out = svc.predict_each([request({"x": 1}), request({"oom": 1})])
    assert out[0] is out[1] and out[0].status == 507
    # a batch that streamed already: its chunks are out, a second run would send them again
    chunks: list = []
    svc.set_stream_callback(chunks.append)
    streamed = [request({"x": 1}, headers={"stream": "1"}), request({"x": 2})]
    assert [o.body for o in svc.predict_each(streamed)] == [b"2", b"4"]  # fine: once
    assert len(chunks) == 1
    out = svc.predict_each([*streamed, request({"bad": "b"})])
    assert isinstance(out[0], HandlerError) and out[0] is out[1] is out[2]


def test_a_request_retried_alone_streams_to_its_own_place(tmp_path):
    svc = load_service(str(_handler_dir(tmp_path, PICKY)))
    places: list = []
    svc.set_stream_callback(lambda outputs: places.append(svc.batch_rows))
    bad_first = [request({"bad": "b"}), request({"x": 2}, headers={"stream": "1"})]
    out = svc.predict_each(bad_first)
    assert out[0].status == 400 and out[1].body == b"4"
    assert places == [[1]] and svc.batch_rows is None


def test_serialisation_and_per_request_response_settings(tmp_path):
    source = """
        import numpy as np
        import torch

        def handle(data, context):
            if data is None:
                return None
            context.set_response_content_type(1, "text/csv")
            context.set_response_status(202, "Accepted", 2)
            context.set_response_header(3, "x-model", "yes")
            return [torch.tensor([[1.0, 2.0]]), "a,b", b"raw", {"n": np.int64(3), "a": np.ones(2)}]
    """
    svc = load_service(str(_handler_dir(tmp_path, source)))
    out = svc.predict([request({}, request_id=str(i)) for i in range(4)])
    assert json.loads(out[0].body) == [[1.0, 2.0]] and out[0].content_type == "application/json"
    assert out[1].body == b"a,b" and out[1].content_type == "text/csv"
    assert (out[2].body, out[2].status, out[2].reason) == (b"raw", 202, "Accepted")
    assert out[2].content_type == "application/octet-stream"
    assert json.loads(out[3].body) == {"n": 3, "a": [1.0, 1.0]}
    assert out[3].headers == {"x-model": "yes"} and out[3].status == 200 and out[3].reason == "OK"


def test_unserialisable_output_is_a_handler_error(tmp_path):
    source = """
        def handle(data, context):
            if data is None:
                return None
            return [object()]
    """
    svc = load_service(str(_handler_dir(tmp_path, source)))
    with pytest.raises(HandlerError, match="Unsupported model output"):
        svc.predict([request({})])


def test_headers_reach_the_handler_and_explain_flag(tmp_path):
    source = """
        def handle(data, context):
            if data is None:
                return None
            return [
                {"explain": context.get_request_header(i, "explain"),
                 "ct": context.get_request_header(i, "body"),
                 "id": context.get_request_id(i)}
                for i in range(len(data))
            ]
    """
    svc = load_service(str(_handler_dir(tmp_path, source)))
    req = RequestInput("id-7", {"Explain": "True"}, [("body", "application/json", b"{}")])
    body = json.loads(svc.predict([req])[0].body)
    assert body == {"explain": "True", "ct": {"content-type": "application/json"}, "id": "id-7"}


def test_streaming_intermediate_responses(tmp_path):
    source = """
        from ts.handler_utils.utils import send_intermediate_predict_response

        def handle(data, context):
            if data is None:
                return None
            for word in ("one", "two"):
                send_intermediate_predict_response([word] * len(data), context.request_ids,
                                                   "Intermediate", 200, context)
            return ["done"] * len(data)
    """
    svc = load_service(str(_handler_dir(tmp_path, source)))
    chunks = []
    svc.set_stream_callback(chunks.append)
    final = svc.predict([request({}), request({})])
    assert [[o.body for o in chunk] for chunk in chunks] == [[b"one", b"one"], [b"two", b"two"]]
    assert all(o.headers["ts_stream_next"] == "true" for chunk in chunks for o in chunk)
    assert [o.body for o in final] == [b"done", b"done"]
    assert all(o.headers["ts_stream_next"] == "false" for o in final)


def test_metrics_emitted_by_the_handler_are_readable(tmp_path):
    source = """
        def handle(data, context):
            if data is None:
                return None
            context.metrics.add_counter("Seen", len(data))
            return [0] * len(data)
    """
    svc = load_service(str(_handler_dir(tmp_path, source)))
    svc.predict([request({})])
    names = [r["name"] for r in svc.context.metrics.drain()]
    assert "Seen" in names and "PredictionTime" in names


def test_archive_modules_shadow_earlier_archives(tmp_path):
    first = _handler_dir(
        tmp_path, "def handle(d, c):\n    return None if d is None else [1]\n", name="a"
    )
    second = _handler_dir(
        tmp_path, "def handle(d, c):\n    return None if d is None else [2]\n", name="b"
    )
    assert load_service(str(first)).predict([request({})])[0].body == b"1"
    assert load_service(str(second)).predict([request({})])[0].body == b"2"


def test_requirements_dir_goes_on_sys_path(tmp_path):
    reqs = tmp_path / "reqs"
    reqs.mkdir()
    (reqs / "extra_dep_for_test.py").write_text("VALUE = 41\n")
    source = """
        import extra_dep_for_test

        def handle(data, context):
            return None if data is None else [extra_dep_for_test.VALUE + 1]
    """
    svc = load_service(str(_handler_dir(tmp_path, source)), requirements_dir=str(reqs))
    assert svc.predict([request({})])[0].body == b"42"
    sys.path.remove(str(reqs))


@pytest.mark.slow  # runs pip / a pre-flight subprocess
def test_install_requirements_failure_shows_pip_output(tmp_path):
    model_dir = tmp_path / "r"
    model_dir.mkdir()
    write_manifest(
        model_dir, name="r", serialized="m.pt", handler="h.py", requirementsFile="req.txt"
    )
    (model_dir / "req.txt").write_text("./no-such-local-package-dir\n")
    with pytest.raises(RequirementsInstallError, match="req.txt.*exit code") as info:
        install_requirements(str(model_dir), str(tmp_path / "target"))
    assert "no-such-local-package-dir" in str(info.value)


@pytest.mark.slow  # runs pip / a pre-flight subprocess
def test_install_requirements_installs_into_target(tmp_path):
    pkg = tmp_path / "tinypkg"
    (pkg / "tinypkg_for_jts").mkdir(parents=True)
    (pkg / "tinypkg_for_jts" / "__init__.py").write_text("X = 1\n")
    (pkg / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "tinypkg-for-jts"\nversion = "0.1"\n'
    )
    model_dir = tmp_path / "r"
    model_dir.mkdir()
    write_manifest(model_dir, name="r", serialized="m.pt", handler="h.py")
    (model_dir / "requirements.txt").write_text(f"{pkg}\n")
    target = tmp_path / "target"
    try:
        install_requirements(str(model_dir), str(target))
    except RequirementsInstallError as exc:
        if "setuptools" in str(exc) or "network" in str(exc).lower():
            pytest.skip(f"no build backend available offline: {exc}")
        raise
    assert (target / "tinypkg_for_jts" / "__init__.py").is_file()
    install_requirements(str(tmp_path / "target"), str(tmp_path / "t2"))  # no file: no-op


def test_npy_body_reaches_tensor_handler_as_bytes(tmp_path):
    model_dir = make_model_dir(tmp_path, torch.nn.Linear(2, 1))
    svc = load_service(str(model_dir))
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.ones((2, 2), dtype=np.float32))
    out = svc.predict([request(buffer.getvalue(), "application/x-npy")])
    assert len(json.loads(out[0].body)) == 2
