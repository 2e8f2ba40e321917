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


_SOURCES = ("query", "body", "path", "header", "cookie")


def _loc(loc: tuple | list) -> str:
    return ".".join(str(p) for p in loc if p not in _SOURCES)


def _json_position(doc: object, pos: int) -> str:
    text = doc.decode("utf-8", "replace") if isinstance(doc, bytes) else str(doc or "")
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"line {line} column {column}"


def _message(error: dict, body: object = None) -> str:
    """One error as the sentence a client reads: what is wrong, said the same way everywhere."""
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if kind == "json_invalid":
        loc = list(error.get("loc", ()))
        pos = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else 0
        reason = ctx.get("error") or "not valid JSON"
        return f"invalid JSON at {_json_position(body, pos)} ({reason})"
    # The same wording as api.params.BadParameter, so query and body length errors read alike.
    if kind == "string_too_long" and "max_length" in ctx:
        return f"is longer than {ctx['max_length']} characters"
    if kind == "string_too_short" and "min_length" in ctx:
        return "is empty" if ctx["min_length"] == 1 else f"is shorter than {ctx['min_length']} characters"
    return msg


def _line(error: dict, body: object = None) -> str:
    loc = list(error.get("loc", ()))
    if error.get("type") == "json_invalid":
        return f"body: {_message(error, body)}"  # the loc's second part is a character offset
    name = _loc(loc)
    msg = _message(error, body)
    if not name:
        if loc and error.get("type") != "value_error":
            name = str(loc[0]) if loc else "request"  # e.g. "body: Field required"
        else:
            return msg  # a whole-model check ("threshold for ... must be ...") speaks for itself
    if msg.startswith(name + " "):
        return msg  # "keyword is empty; ..." names its field already
    return f"{name}: {msg}"


def _readable(errors: list[dict], body: object = None) -> str:
    return "; ".join(_line(e, body) for e in errors)


def _safe_errors(errors: list[dict], body: object = None) -> list[dict]:
    # The raw pydantic errors may carry the offending value or exception objects; keep JSON types.
    return [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": _message(e, body),
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
        body = getattr(exc, "body", None)
        return JSONResponse(
            status_code=422,
            content={"detail": _readable(errors, body), "errors": _safe_errors(errors, body)},
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
