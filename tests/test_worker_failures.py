"""What a worker writes in the model's log when a request fails (process-free).

A client's mistake (a 4xx the handler chose) is one warning line with its reason; a broken
handler (5xx) keeps its traceback at ERROR, where its owner looks for it.
"""

from __future__ import annotations

import logging
import textwrap

from _handler_helpers import run_infer_frame, write_manifest

from jupyter_torchserve.handlers.service import load_service

# TorchServe's PredictionException is recognised by name and error_code (service.predict)
HANDLER = textwrap.dedent("""
    import json

    class PredictionException(Exception):
        def __init__(self, message, error_code=500):
            super().__init__(message)
            self.error_code = error_code

    def handle(data, context):
        if data is None:
            return None
        for row in data:
            body = row.get("body")  # a JSON body comes decoded, as in TorchServe
            body = json.loads(body) if isinstance(body, (bytes, bytearray)) else body
            if body.get("refuse"):
                raise PredictionException("field 'x' is missing", 400)
            if body.get("broken"):
                raise ZeroDivisionError("division by zero in the handler")
        return [{"ok": True} for _ in data]
""")


def test_a_refused_request_is_one_warning_a_broken_one_a_traceback(tmp_path, caplog):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "h.py").write_text(HANDLER)
    write_manifest(model_dir, name="m", serialized="none.pt", handler="h.py")
    svc = load_service(str(model_dir))
    with caplog.at_level(logging.INFO, logger="jupyter_torchserve.worker"):
        frame = run_infer_frame(svc, [{"refuse": 1}, {"broken": 1}, {}])
    refused, broken, fine = frame["resps"]
    assert refused["e"]["status"] == 400 and broken["e"]["status"] == 503 and fine["s"] == 200

    records = [r for r in caplog.records if r.name == "jupyter_torchserve.worker"]
    warnings = [r for r in records if r.levelno == logging.WARNING]
    errors = [r for r in records if r.levelno == logging.ERROR]
    (warning,) = warnings
    assert warning.getMessage() == (
        "refused a request (400): PredictionException: field 'x' is missing"
    )
    (error,) = errors
    text = error.getMessage()
    assert "Traceback" in text and "ZeroDivisionError: division by zero" in text
    assert "field 'x' is missing" not in text
