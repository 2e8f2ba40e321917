"""Shared route helpers: documented error responses and a thread hop for query-layer calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pydantic_core
from fastapi import Response
from starlette.concurrency import run_in_threadpool

from api.schemas import Message, ValidationProblem

T = TypeVar("T")

READ_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Message, "description": "API key missing or wrong (only when reads require one)."},
    422: {"model": ValidationProblem, "description": "A parameter is invalid; `detail` says which and why."},
    503: {"model": Message, "description": "The database is unreachable; retry later."},
}
WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **READ_RESPONSES,
    400: {"model": Message, "description": "The body could not be parsed (not UTF-8 JSON)."},
    401: {
        "model": Message,
        "description": "X-API-Key header missing or wrong (API_KEY is set); checked before the body.",
    },
    413: {"model": Message, "description": "The request body is larger than 64 KiB."},
}


async def call_db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking query-layer function in the worker thread pool (never on the event loop)."""
    return await run_in_threadpool(fn, *args, **kwargs)


def json_response(value: Any, status_code: int = 200) -> Response:
    """Serialise query-layer results (dataclasses, datetimes) straight to JSON bytes in Rust.

    The hot read endpoints return this instead of a pydantic model: validating and dumping 1440
    trend points through models, then FastAPI's dict + json.dumps pass, cost ~4x more CPU. Their
    `response_model` still documents the shape, which the query-layer dataclasses match field for
    field (the schemathesis run checks responses against it)."""
    return Response(pydantic_core.to_json(value), status_code=status_code, media_type="application/json")
