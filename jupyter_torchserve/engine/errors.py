"""TorchServe-shaped API errors: `{"code", "type", "message"}` with the matching status.

The `type` is the Java exception's simple name TorchServe would use, so clients that switch
on it (and people who search for it) keep working.
"""

from __future__ import annotations


class ApiError(Exception):
    """An answer with an error status; `traceback` is the worker's, when a handler failed.

    A traceback shows paths under the user's home, the package cache and the handler's
    code, so it is the owner's to see: `to_json(with_traceback=True)` is for callers that
    proved they hold the management key (the notebook and the sidebar, see
    `registry.ModelRegistry.is_owner`); everyone else gets the one-line message, as
    TorchServe's "Prediction failed", and the traceback stays in the model's log. A 4xx
    goes without it to the owner too: it is the request's fault, its message says what was
    wrong, and the handler's frames under it would only bury that.
    """

    def __init__(self, status: int, type: str, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.traceback = traceback

    def to_json(self, with_traceback: bool = False) -> dict[str, object]:
        message = self.message
        if with_traceback and self.traceback and self.status >= 500:
            message = f"{message}\n{self.traceback}"
        return {"code": self.status, "type": self.type, "message": message}


class QueueFull(ApiError):
    """A full job queue: REST's 503 like any unavailable model, but gRPC says
    RESOURCE_EXHAUSTED, so it is told apart from "no worker"."""

    def __init__(self, name: str, version: str, size: int) -> None:
        super().__init__(
            503,
            "ServiceUnavailableException",
            f"Model {name} version {version} has a full job queue ({size} requests, job_queue_size)",
        )


def model_not_found(name: str) -> ApiError:
    return ApiError(404, "ModelNotFoundException", f"Model not found: {name}")


def version_not_found(name: str, version: str) -> ApiError:
    return ApiError(
        404,
        "ModelVersionNotFoundException",
        f"Model version: {version} does not exist for model: {name}",
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequestException", message)


def no_worker(name: str) -> ApiError:
    return ApiError(
        503,
        "ServiceUnavailableException",
        f'Model "{name}" has no worker to serve inference request. '
        "Please use scale workers API to add workers. If this is a sequence inference, "
        "please check if it is closed, or expired; or exceeds maxSequenceJobQueueSize",
    )


def not_found_route() -> ApiError:
    return ApiError(
        404,
        "ResourceNotFoundException",
        "Requested resource is not found, please refer to API document.",
    )


def method_not_allowed() -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowedException",
        "Requested method is not allowed, please refer to API document.",
    )


def unexpected_error(exc: BaseException) -> ApiError:
    """A failure that is nobody's input error: TorchServe's 500, naming the exception."""
    return ApiError(500, "InternalServerException", f"{type(exc).__name__}: {exc}")


def invalid_key() -> ApiError:
    return ApiError(
        400,
        "InvalidKeyException",
        "Token Authorization failed. Token either incorrect, expired, or not provided correctly",
    )
