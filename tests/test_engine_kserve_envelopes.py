"""The KServe v1/v2 calls (`engine/inference/kserve.py`) with a recording `run` instead of
workers: what each envelope sends to the handler, and how replies become the answer. No
process: fast tier."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest

from jupyter_torchserve.engine.errors import ApiError
from jupyter_torchserve.engine.inference import kserve
from jupyter_torchserve.engine.jobs import Reply
from jupyter_torchserve.engine.registry import ModelEntry
from jupyter_torchserve.engine.v2_schema import v2_metadata_tensors

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


class _Run:
    """Records each request's items and headers; answers each item with `answer(params)`."""

    def __init__(self, answer=None) -> None:
        self.calls: list[tuple[list, dict]] = []
        self.answer = answer or (lambda params: Reply(200, "application/json", b"[1]"))

    async def __call__(self, items, headers):
        self.calls.append((items, headers))
        return [self.answer(params) for params in items]


def _json(value) -> Reply:
    return Reply(200, "application/json", json.dumps(value).encode())


def _mv(builtin: str | None = "tensor", outputs=None, fmt: str | None = "export"):
    schema = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 2]}]}
    if outputs is not None:
        schema["outputs"] = outputs
    metadata = {"builtin_handler": builtin, "schema": schema, "format": fmt}
    return SimpleNamespace(
        name="m",
        version="1.0",
        metadata=metadata,
        builtin_handler=builtin,  # ModelVersion's: the archive's, none named at registration
        v2_tensors=v2_metadata_tensors(metadata, builtin),
        ready_workers=[object()],
        min_workers=1,
    )


def _run(coro):
    return asyncio.run(coro)


# -- v1 -------------------------------------------------------------------------------------
def test_v1_each_instance_is_one_job_and_answers_come_back_in_order():
    run = _Run(lambda params: _json({"got": params[0][0], "n": len(params[0][2])}))
    payload = {"instances": [{"data": [1, 2]}, [3, 4], {"b64": base64.b64encode(PNG).decode()}]}
    out = _run(kserve.v1_predict(payload, {"h": "1"}, run))
    ((items, headers),) = run.calls
    assert headers == {"h": "1"}
    assert items[0] == [("data", "application/json", b"[1, 2]")]  # a field per key
    assert items[1] == [("body", "application/json", b"[[3, 4]]")]  # a bare tensor: a batch of one
    assert items[2] == [("body", "application/octet-stream", PNG)]  # b64 decoded
    assert out["predictions"] == [
        {"got": "data", "n": 6},
        {"got": "body", "n": 8},
        {"got": "body", "n": len(PNG)},
    ]


def test_v1_a_bare_instance_gets_its_one_row_back_unwrapped():
    run = _Run(lambda params: _json([[0.5, 0.5]]))
    out = _run(kserve.v1_predict({"instances": [[1, 2]]}, {}, run))
    assert out == {"predictions": [[0.5, 0.5]]}


def test_v1_explain_sets_the_header_the_handler_switches_on():
    run = _Run()
    out = _run(kserve.v1_predict({"instances": [[1]]}, {"a": "b"}, run, explain=True))
    assert run.calls[0][1] == {"a": "b", "explain": "True"} and "explanations" in out


@pytest.mark.parametrize(
    "payload, message",
    [
        ([1, 2], "expects a JSON object"),
        ({"instances": 3}, "expects a JSON object"),
        ({"instances": []}, "instances is empty"),
        ({"instances": [{"b64": "not base64!"}]}, "not valid base64"),
    ],
)
def test_v1_bad_bodies_are_400s_before_any_job(payload, message):
    run = _Run()
    with pytest.raises(ApiError) as e:
        _run(kserve.v1_predict(payload, {}, run))
    assert e.value.status == 400 and message in e.value.message and run.calls == []


def test_a_handler_error_reply_becomes_that_status():
    run = _Run(lambda params: Reply(507, "text/plain", b"out of memory"))
    with pytest.raises(ApiError) as e:
        _run(kserve.v1_predict({"instances": [[1]]}, {}, run))
    assert e.value.status == 507 and e.value.message == "out of memory"


def test_v1_status_reads_the_default_versions_workers():
    entry = ModelEntry("m")
    entry.versions["1.0"], entry.default_version = _mv(), "1.0"  # type: ignore[assignment]
    assert kserve.v1_status(entry) == {"name": "m", "ready": True}


# -- v2 -------------------------------------------------------------------------------------
def _v2(data, datatype="FP32", shape=(1, 2), **extra):
    return {
        "inputs": [{"name": "input-0", "datatype": datatype, "shape": list(shape), "data": data}],
        **extra,
    }


def test_v2_a_tensor_reaches_a_builtin_handler_as_npy_with_its_exact_dtype():
    run = _Run(lambda params: _json([[0.25, 0.75]]))
    out = _run(kserve.v2_infer(_mv(), _v2([1.5, 2.5], "FP64", id="abc"), {}, run))
    ((items, _),) = run.calls
    ((name, ctype, body),) = items[0]
    assert (name, ctype) == ("body", "application/x-npy")
    arr = np.load(io.BytesIO(body), allow_pickle=False)
    assert arr.dtype == np.float64 and arr.tolist() == [[1.5, 2.5]]
    assert out["id"] == "abc" and out["model_name"] == "m" and out["model_version"] == "1.0"
    assert out["outputs"] == [
        {"name": "input-0", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]}
    ]


def test_v2_a_custom_handler_gets_what_torchserves_kservev2_envelope_gives():
    run = _Run()
    _run(kserve.v2_infer(_mv(builtin=None), _v2([[1, 2]]), {}, run))
    assert run.calls[0][0] == [[("data", "application/json", b"[[1.0, 2.0]]")]]
    two = {"inputs": [_v2([1, 2])["inputs"][0], {**_v2([3, 4])["inputs"][0], "name": "b"}]}
    _run(kserve.v2_infer(_mv(), two, {}, run))
    assert json.loads(run.calls[1][0][0][0][2]) == {"input-0": [[1.0, 2.0]], "b": [[3.0, 4.0]]}


def test_v2_bytes_elements_are_one_job_each_binary_text_or_json():
    run = _Run(lambda params: _json([1.0, 2.0]))
    data = [base64.b64encode(PNG).decode(), "plain words", 7]
    out = _run(kserve.v2_infer(_mv(), _v2(data, "BYTES", [3]), {}, run))
    ((items, _),) = run.calls
    assert items == [
        [("body", "application/octet-stream", PNG)],
        [("body", "text/plain", b"plain words")],
        [("body", "application/json", b"7")],
    ]
    # one row per element, stacked, with the schema's output name
    assert out["outputs"][0]["shape"] == [3, 2] and out["outputs"][0]["datatype"] == "FP32"


def test_v2_output_is_named_after_the_input_as_torchserve_names_it():
    """TorchServe's kservev2 envelope names each output after its input; tritonclient's
    `as_numpy(name)` looks it up by that name. The schema's datatype still types it."""
    run = _Run(lambda params: _json([3, 4]))
    mv = _mv(outputs=[{"name": "logits", "datatype": "FP64", "shape": [-1, 2]}])
    payload = _v2([1, 2])
    payload["inputs"][0]["name"] = "312a4eb0-0ca7-4803-a101-a6d2c18486fe"
    out = _run(kserve.v2_infer(mv, payload, {}, run))
    assert out["outputs"][0] == {
        "name": "312a4eb0-0ca7-4803-a101-a6d2c18486fe",
        "datatype": "FP64",
        "shape": [2],
        "data": [3, 4],
    }


def test_v2_metadata_names_the_output_as_infer_names_it():
    """tritonclient reads the output's name from the metadata and asks the answer for it:
    the two must agree, so the metadata's output carries the first input's name."""
    mv = _mv(outputs=[{"name": "output-0", "datatype": "FP32", "shape": [-1, 3]}])
    entry = SimpleNamespace(name="m", versions={"1.0": mv})
    meta = kserve.v2_model_metadata(entry, mv)  # type: ignore[arg-type]
    answer = _run(kserve.v2_infer(mv, _v2([1, 2]), {}, _Run()))
    assert meta["outputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 3]}]
    assert answer["outputs"][0]["name"] == meta["outputs"][0]["name"]


def test_v2_a_postprocessed_answer_is_bytes_json_whatever_the_traced_schema_says():
    """An image classifier's schema has the traced logits (FP32 [-1, 10]), but its
    postprocess answers a top-5 dict: the output is BYTES with that dict as JSON, not an
    FP32 tensor holding a dict (which no client, gRPC's typed contents least, can read)."""
    top5 = {"zero": 0.9, "six": 0.05}
    run = _Run(lambda params: _json(top5))
    mv = _mv(outputs=[{"name": "output-0", "datatype": "FP32", "shape": [-1, 10]}])
    out = _run(kserve.v2_infer(mv, _v2([1, 2]), {}, run))
    (output,) = out["outputs"]
    assert (output["datatype"], output["shape"]) == ("BYTES", [1])
    assert json.loads(output["data"][0]) == top5


@pytest.mark.parametrize(
    ("builtin", "answer", "datatype", "shape", "traced"),
    [
        ("image_classifier", {"zero": 0.9, "six": 0.05}, "BYTES", [-1], [-1, 10]),
        ("text_classifier", {"neg": 0.2, "pos": 0.8}, "BYTES", [-1], [-1, 10]),
        ("object_detector", [{"cat": [1.0, 2.0, 3.0, 4.0], "score": 0.9}], "BYTES", [-1], [-1, 10]),
        ("image_segmenter", [[[0, 1], [1, 1]]], "INT64", [-1, 2, 2], [-1, 4, 2, 2]),
        ("tensor", [0.1] * 10, "FP32", [-1, 10], [-1, 10]),
    ],
)
def test_v2_metadata_gives_the_datatype_infer_answers(builtin, answer, datatype, shape, traced):
    """A built-in whose postprocess answers JSON objects gets BYTES from `/infer`, one JSON
    per row: its metadata says BYTES [rows] too, not the traced FP32 [-1, 10] the schema
    holds, so a client that reads the datatype from the metadata decodes the answer. The
    segmenter answers class indices, INT64 [N, H, W], not its traced FP32 [N, C, H, W]
    scores. The tensor handler keeps the schema's tensor."""
    mv = _mv(builtin, outputs=[{"name": "output-0", "datatype": "FP32", "shape": traced}])
    entry = SimpleNamespace(name="m", versions={"1.0": mv})
    (meta,) = kserve.v2_model_metadata(entry, mv)["outputs"]  # type: ignore[arg-type]
    (out,) = _run(kserve.v2_infer(mv, _v2([1, 2]), {}, _Run(lambda p: _json(answer))))["outputs"]
    assert (meta["name"], meta["datatype"], meta["shape"]) == ("input-0", datatype, shape)
    assert out["datatype"] == meta["datatype"]


def test_v2_kserves_bytes_sample_with_shape_minus_one_is_served():
    """KServe's mnist_v2_bytes.json for TorchServe says shape [-1]: one job per element."""
    run = _Run(lambda params: _json({"4": 0.9}))
    sample = {
        "inputs": [
            {
                "data": [base64.b64encode(PNG).decode()],
                "datatype": "BYTES",
                "name": "312a4eb0-0ca7-4803-a101-a6d2c18486fe",
                "shape": [-1],
            }
        ]
    }
    out = _run(kserve.v2_infer(_mv(), sample, {}, run))
    assert run.calls[0][0] == [[("body", "application/octet-stream", PNG)]]
    assert out["outputs"][0]["name"] == "312a4eb0-0ca7-4803-a101-a6d2c18486fe"


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"inputs": []}, "KServe v2 expects"),
        ({"inputs": [3]}, "each input must be an object"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}, "missing 'data'"),
        (_v2([1, 2], "COMPLEX64"), "unsupported datatype 'COMPLEX64'"),
        (_v2([1, 2], shape=(-1, 2)), "list of non-negative ints"),
        (_v2(["a"], "BYTES", shape=(-2,)), "list of ints of at least -1"),
        (_v2(["a"], "BYTES", shape=("1",)), "list of ints of at least -1"),
        (_v2(["a"], "BYTES", shape=(True,)), "list of ints of at least -1"),
        (_v2([1, 2, 3]), "has 3 values but shape [1, 2] needs 2"),
        (_v2(["a", "b"]), "input input-0"),
    ],
)
def test_v2_bad_inputs_are_400s_before_any_job(payload, message):
    run = _Run()
    with pytest.raises(ApiError) as e:
        _run(kserve.v2_infer(_mv(), payload, {}, run))
    assert e.value.status == 400 and message in e.value.message and run.calls == []


def test_v2_tensors_from_protobuf_contents_need_no_json():
    """What a gRPC servicer will pass: an array (raw_input_contents) or bytes elements
    (bytes_contents); the handler gets the same inputs as from the JSON body."""
    run = _Run(lambda params: _json([[1]]))
    array = kserve.Tensor("input-0", "FP32", [1, 2], np.array([1.5, 2.5], dtype=np.float32))
    _run(kserve.v2_infer_tensors(_mv(), [array], {}, run))
    _run(kserve.v2_infer(_mv(), _v2([1.5, 2.5]), {}, run))
    assert run.calls[0][0] == run.calls[1][0]
    raw = kserve.Tensor("input-0", "BYTES", [1], [PNG])
    _run(kserve.v2_infer_tensors(_mv(), [raw], {}, run))
    assert run.calls[2][0] == [[("body", "application/octet-stream", PNG)]]


def _explained(value, **facts) -> Reply:
    """A built-in's explanation: TorchServe's body, the rest in the x-explanation header."""
    header = json.dumps({"method": "IntegratedGradients", "n_steps": 15, **facts})
    return Reply(
        200, "application/json", json.dumps(value).encode(), headers={"x-explanation": header}
    )


def test_v2_explain_answers_kserves_sample_shape_with_the_facts_as_parameters():
    """KServe's TorchServe sample: one BYTES image -> an FP64 output named explain, shaped
    [1, 28, 28] (here [1, 2, 2]), data flattened."""
    attributions = [[[0.5, -0.25], [0.0, 1.0]]]
    run = _Run(lambda params: _explained(attributions, target=3, delta=0.01, topk=[[3, "3", 0.9]]))
    payload = _v2([base64.b64encode(PNG).decode()], "BYTES", [1], id="r1")
    out = _run(kserve.v2_infer(_mv(), payload, {"x-a": "b"}, run, explain=True))
    ((items, headers),) = run.calls
    assert items == [[("body", "application/octet-stream", PNG)]]
    assert headers == {"x-a": "b", "explain": "True"}  # what TorchServe's frontend adds
    assert out["id"] == "r1" and out["model_name"] == "m"
    assert out["outputs"] == [
        {
            "name": "explain",
            "datatype": "FP64",
            "shape": [1, 2, 2],
            "data": [0.5, -0.25, 0.0, 1.0],
            "parameters": {
                "method": "IntegratedGradients",
                "n_steps": 15,
                "target": 3,
                "delta": 0.01,
                "topk": '[[3,"3",0.9]]',  # OIP parameters are scalars: JSON text
            },
        }
    ]


def test_v2_explain_names_the_target_in_parameters_one_per_bytes_element():
    run = _Run(lambda params: _explained([[1.0, 2.0]], target=json.loads(params[-1][2])))
    data = [base64.b64encode(PNG).decode()] * 2
    payload = _v2(data, "BYTES", [2], parameters={"target": [4, 0]})
    out = _run(kserve.v2_infer(_mv(), payload, {}, run, explain=True))
    ((items, _),) = run.calls
    assert [item[-1] for item in items] == [
        ("target", "application/json", b"4"),
        ("target", "application/json", b"0"),
    ]
    (explain,) = out["outputs"]
    assert explain["shape"] == [2, 1, 2] and explain["data"] == [1.0, 2.0, 1.0, 2.0]
    assert explain["parameters"]["target"] == "[4,0]"  # several jobs: each fact as a list
    # one target for a tensor request: its field, as a v1 instance's "target" key is
    _run(kserve.v2_infer(_mv(), _v2([1, 2], parameters={"target": 1}), {}, run, explain=True))
    assert run.calls[1][0][0][-1] == ("target", "application/json", b"1")


def test_v2_explain_of_text_has_words_and_importances():
    body = {"words": ["a", "good", "film"], "importances": [0.1, 0.9, -0.2], "delta": 0.03}
    run = _Run(lambda params: _explained(body, target=1))
    out = _run(
        kserve.v2_infer(
            _mv("text_classifier"), _v2(["a good film"], "BYTES", [1]), {}, run, explain=True
        )
    )
    explain, words = out["outputs"]
    assert explain["name"] == "explain" and explain["datatype"] == "FP64"
    assert explain["shape"] == [3] and explain["data"] == [0.1, 0.9, -0.2]
    assert explain["parameters"]["delta"] == 0.03 and explain["parameters"]["target"] == 1
    assert words == {
        "name": "words",
        "datatype": "BYTES",
        "shape": [3],
        "data": ["a", "good", "film"],
    }


def test_v2_explain_answers_that_do_not_stack_come_as_bytes_json():
    answers = iter([[1.0, 2.0], [3.0]])
    run = _Run(lambda params: _explained(next(answers)))
    out = _run(kserve.v2_infer(_mv(), _v2(["x", "y"], "BYTES", [2]), {}, run, explain=True))
    (explain,) = out["outputs"]
    assert explain["datatype"] == "BYTES" and explain["data"] == ["[1.0, 2.0]", "[3.0]"]


def test_v2_explain_parameters_must_be_an_object():
    run = _Run()
    with pytest.raises(ApiError) as e:
        _run(kserve.v2_infer(_mv(), _v2([1, 2], parameters=[3]), {}, run, explain=True))
    assert e.value.status == 400 and "parameters must be an object" in e.value.message
    assert run.calls == []


def test_v2_metadata_readiness_and_health():
    mv = _mv(fmt="torchscript")
    entry = ModelEntry("m")
    entry.versions = {"2.0": mv, "1.0": mv}  # type: ignore[dict-item]
    meta = kserve.v2_model_metadata(entry, mv)  # type: ignore[arg-type]
    assert meta["name"] == "m" and meta["versions"] == ["1.0", "2.0"]
    assert meta["platform"] == "pytorch_torchscript" and meta["inputs"][0]["name"] == "input-0"
    assert meta["outputs"] == []
    assert kserve.v2_model_metadata(entry, _mv(fmt=None))["platform"] == "pytorch_torchserve"  # type: ignore[arg-type]
    assert kserve.v2_model_ready("m", mv) == {"name": "m", "ready": True}  # type: ignore[arg-type]
    idle = SimpleNamespace(ready_workers=[], min_workers=1)
    unasked = SimpleNamespace(ready_workers=[], min_workers=0)
    assert kserve.v2_ready(SimpleNamespace(all_versions=lambda: [mv, unasked])) == {"ready": True}  # type: ignore[arg-type]
    assert kserve.v2_ready(SimpleNamespace(all_versions=lambda: [mv, idle])) == {"ready": False}  # type: ignore[arg-type]
    assert kserve.v2_live() == {"live": True} and kserve.v2_server()["name"] == "jupyter_torchserve"


def test_v2_errors_carry_oips_error_beside_torchserves_fields():
    body = kserve.error_body(ApiError(404, "ModelNotFoundException", "Model not found: x"))
    assert body == {
        "code": 404,
        "type": "ModelNotFoundException",
        "message": "Model not found: x",
        "error": "Model not found: x",
    }


@pytest.mark.parametrize(
    "body, envelope",
    [
        (b'{"instances": [[1, 2]]}', {"instances": [[1, 2]]}),
        (b'  {"instances": 3}', {"instances": 3}),  # an envelope, and a 400 later
        (PNG, None),  # curl -T digit.png: the handler's input
        (b"[1, 2, 3]", None),  # plain JSON: TorchServe hands it to the handler too
        (b'{"data": [1]}', None),
        (b"{not json", None),
        (b"", None),
    ],
)
def test_v1_a_body_is_an_envelope_only_when_it_has_instances(body, envelope):
    assert kserve.v1_envelope(body) == envelope


def test_json_body_errors_say_what_is_wrong():
    assert kserve.json_body(b"") is None
    with pytest.raises(ApiError) as e:
        kserve.json_body(b"{not json")
    assert e.value.status == 400 and "not valid JSON" in e.value.message
