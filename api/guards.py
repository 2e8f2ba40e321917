"""ASGI guards that run before FastAPI reads a request body: the write key and a body size limit.

FastAPI parses and validates the JSON body before it solves a route's dependencies, so a write
with a wrong key and a malformed body used to answer 422 (telling an unauthenticated client about
the body) and a 50 MB body was parsed whole before any check. These guards answer 401 and 413
first, without reading the body.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import key_matches

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_BODY_BYTES = 64 * 1024
"""No request body the API takes (a keyword, an alert rule, test-email recipients) comes near this."""


async def _send_json(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _is_route(app: Any, scope: Scope) -> bool:
    # Only requests that reach a route: an unknown path or method keeps its 404 / 405.
    for route in getattr(getattr(app, "router", None), "routes", ()):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return True
    return False


class WriteKeyGuard:
    """401 for a write (POST/PUT/PATCH/DELETE on a route) without the right X-API-Key, API_KEY set.

    The routes' `require_write_key` dependency stays (it documents the key in OpenAPI and guards an
    app mounted without this middleware); this only makes the answer come before the body is read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") in WRITE_METHODS:
            app = scope.get("app")
            state = getattr(getattr(app, "state", None), "sp", None)
            settings = getattr(state, "settings", None)
            if (
                settings is not None
                and settings.api_key is not None
                and _is_route(app, scope)
                and not key_matches(settings, _header(scope, b"x-api-key"))
            ):
                await _send_json(
                    send, 401, "missing or wrong X-API-Key header", {"WWW-Authenticate": "ApiKey"}
                )
                return
        await self.app(scope, receive, send)


class _TooLarge(HTTPException):
    # An HTTPException because FastAPI's body reading re-raises those (to the app's handler, which
    # answers 413) and turns any other exception into a 400.
    def __init__(self, detail: str) -> None:
        super().__init__(status_code=413, detail=detail, headers={"Connection": "close"})


class BodySizeLimit:
    """413 for a body over `max_bytes`: by Content-Length up front, else by counting streamed chunks."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _detail(self) -> str:
        return f"request body is larger than {self.max_bytes} bytes ({self.max_bytes // 1024} KiB)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_bytes:
            await _send_json(send, 413, self._detail(), {"Connection": "close"})
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(self._detail())
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_json(send, 413, self._detail(), {"Connection": "close"})
