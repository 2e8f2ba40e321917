"""Exception handlers: bad input -> 422 with a readable sentence, a dead database -> 503 with a reason.

Nothing a client sends may turn into a 500; an unexpected error is logged with its traceback and
answered with a generic 500 that leaks no internals.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc

from api.params import BadParameter

logger = logging.getLogger(__name__)


class ServiceUnavailable(Exception):
    """The database (or another dependency) cannot answer now; the client may retry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _loc(loc: tuple | list) -> str:
    parts = [str(p) for p in loc if p not in ("query", "body", "path", "header")]
    return ".".join(parts) or "request"


def _readable(errors: list[dict]) -> str:
    return "; ".join(f"{_loc(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors)


def _safe_errors(errors: list[dict]) -> list[dict]:
    # The raw pydantic errors may carry the offending value or exception objects; keep JSON types.
    return [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]


def _db_reason(exc: Exception) -> str:
    # The DBAPI message may contain host names but never the password; keep it short anyway.
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return first[:300]


def unavailable_response(reason: str) -> JSONResponse:
    return JSONResponse(
        status_code=503, content={"detail": f"database unavailable: {reason}"}, headers={"Retry-After": "5"}
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        return JSONResponse(
            status_code=422, content={"detail": _readable(errors), "errors": _safe_errors(errors)}
        )

    @app.exception_handler(BadParameter)
    async def _bad_parameter(request: Request, exc: BadParameter) -> JSONResponse:
        return JSONResponse(
            status_code=422,
            content={
                "detail": str(exc),
                "errors": [{"loc": [exc.param], "msg": exc.message, "type": "value_error"}],
            },
        )

    @app.exception_handler(ServiceUnavailable)
    async def _unavailable(request: Request, exc: ServiceUnavailable) -> JSONResponse:
        return unavailable_response(exc.reason)

    async def _db_down(request: Request, exc: Exception) -> JSONResponse:
        logger.warning("database error on %s %s: %s", request.method, request.url.path, _db_reason(exc))
        return unavailable_response(_db_reason(exc))

    for cls in (
        sa_exc.OperationalError,
        sa_exc.InterfaceError,
        sa_exc.DisconnectionError,
        sa_exc.TimeoutError,
    ):
        app.add_exception_handler(cls, _db_down)
    try:
        from db.database import DatabaseUnavailable
    except ImportError:  # db/ not importable: nothing to map
        pass
    else:
        app.add_exception_handler(DatabaseUnavailable, _db_down)
