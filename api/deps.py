"""Annotated dependency aliases, so route functions declare what they need and never open sessions.

The dependencies are `async def` on purpose: they do no I/O, and FastAPI runs a plain `def`
dependency in the thread pool, which would cost a thread hop per dependency per request."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Security, status
from fastapi.security import APIKeyHeader
from starlette.requests import HTTPConnection

from api.errors import ServiceUnavailable
from api.state import AppState
from pipeline.settings import Settings

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="Required for writes when API_KEY is set."
)


async def get_state(conn: HTTPConnection) -> AppState:
    return conn.app.state.sp


StateDep = Annotated[AppState, Depends(get_state)]


async def get_app_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def get_database(state: StateDep) -> Any:
    if state.db is None:
        raise ServiceUnavailable(state.db_error or "not connected")
    return state.db


DatabaseDep = Annotated[Any, Depends(get_database)]


def key_matches(settings: Settings, presented: str | None) -> bool:
    expected = settings.api_key.get_secret_value().encode() if settings.api_key else b""
    # compare_digest on bytes: constant time, and no TypeError on non-ASCII input.
    return hmac.compare_digest((presented or "").encode(), expected)


async def require_write_key(
    settings: SettingsDep, key: Annotated[str | None, Security(_api_key_header)]
) -> None:
    if settings.api_key is not None and not key_matches(settings, key):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong X-API-Key header",
            headers={"WWW-Authenticate": "ApiKey"},
        )


async def require_read_key(
    settings: SettingsDep, key: Annotated[str | None, Security(_api_key_header)]
) -> None:
    if settings.api_key is not None and settings.api_read_requires_key and not key_matches(settings, key):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong X-API-Key header (API_READ_REQUIRES_KEY is set)",
            headers={"WWW-Authenticate": "ApiKey"},
        )


ApiKeyDep = Annotated[None, Depends(require_write_key)]
ReadKeyDep = Annotated[None, Depends(require_read_key)]
WRITE = Depends(require_write_key)
READ = Depends(require_read_key)
