"""TorchServe's Predictions and Explanations as calls: request in, jobs queued, replies out.

Whatever carried the request (the inference port's fast path, a Tornado handler, soon a gRPC
servicer) calls these, so a request is prepared, counted and answered by one set of rules.
A request is `items`: one list of handler inputs `(name, content_type, bytes)` per job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import ApiError
from ..jobs import Job, Reply
from ..model import ModelVersion
from ..registry import ModelRegistry

Params = list[tuple[str, str, bytes]]

# headers a handler never needs to see (and must not see: the token)
_HIDDEN_HEADERS = {
    "authorization",
    "x-management-authorization",  # contract.OWNER_HEADER: the owner's key
    "cookie",
    "content-length",
    "connection",
    "host",
}


def handler_headers(pairs: Iterable[tuple[str, str]], extra: dict[str, str]) -> dict[str, str]:
    """Request headers as a handler sees them: lower-case names, no credentials."""
    headers = {k.lower(): v for k, v in pairs if k.lower() not in _HIDDEN_HEADERS}
    headers.update(extra)
    return headers


def prediction_headers(
    pairs: Iterable[tuple[str, str]], url_path: str | None, explain: bool
) -> dict[str, str]:
    """A `/predictions` or `/explanations` request's headers for its handler: TorchServe adds
    the rest of the URL after the version as `url_path`, and `explain: True` for an
    explanation (what `BaseHandler` switches on)."""
    extra = {}
    if url_path:
        extra["url_path"] = url_path.lstrip("/")
    if explain:
        extra["explain"] = "True"
    return handler_headers(pairs, extra)


def submit_job(
    registry: ModelRegistry, mv: ModelVersion, url_version: str | None, job: Job
) -> None:
    """Queue `job`; every inference request is counted here, whichever protocol brought it."""
    registry.metrics.request_received(mv, url_version)
    mv.submit(job)


async def run_jobs(
    registry: ModelRegistry,
    mv: ModelVersion,
    url_version: str | None,
    items: list[Params],
    headers: dict[str, str],
    request_id: str,
    jobs: list[Job] | None = None,
    on_chunk: Any = None,
) -> list[Reply]:
    """Queue one job per item, wait for all, keep metrics. Errors propagate as ApiError.

    `jobs`, when given, fills as they are queued, so a caller that learns of a hang-up by a
    callback can withdraw them. Jobs are withdrawn (their futures cancelled, so dispatch
    skips them and a late answer is dropped) when a later item of the same request is
    refused, e.g. by a full queue, and when the waiting is cancelled: nobody would read the
    result.
    """
    loop = asyncio.get_running_loop()
    jobs = [] if jobs is None else jobs
    try:
        for i, params in enumerate(items):
            job = Job(
                id=request_id if len(items) == 1 else f"{request_id}-{i}",
                headers=headers,
                params=params,
                future=loop.create_future(),
                on_chunk=on_chunk,
            )
            submit_job(registry, mv, url_version, job)
            jobs.append(job)
    except BaseException:
        withdraw(jobs)
        raise
    try:
        return list(await asyncio.gather(*(j.future for j in jobs)))
    except asyncio.CancelledError:
        withdraw(jobs)
        raise
    finally:
        for job in jobs:
            if job.future.done() and not job.future.cancelled():
                registry.metrics.request_answered(mv, url_version, job)


def withdraw(jobs: Sequence[Job]) -> None:
    """Nobody will read these answers: dispatch skips the jobs, a late answer is dropped."""
    for job in jobs:
        if not job.future.done():
            job.future.cancel()


def check_response_size(limit: int, reply: Reply) -> None:
    if len(reply.body) > limit:
        raise ApiError(
            500,
            "InternalServerException",
            f"Response of {len(reply.body)} bytes exceeds max_response_size ({limit} bytes)",
        )


def reply_headers(reply: Reply) -> tuple[str, dict[str, str]]:
    """The Content-Type and other headers of a handler's reply as sent to its client: a
    Content-Type among its headers wins, a Content-Length there is the server's to set."""
    content_type = reply.content_type
    headers = {}
    for k, v in reply.headers.items():
        low = k.lower()
        if low == "content-type":
            content_type = v
        elif low != "content-length":
            headers[k] = v
    return content_type, headers
