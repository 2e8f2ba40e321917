"""The API key passed as ?api_key= never reaches uvicorn's logs (a real uvicorn server, INFO level)."""

from __future__ import annotations

import asyncio
import io
import logging

import httpx
from websockets.asyncio.client import connect

from tests.api.conftest import api_settings
from tests.api.live import live_server

SECRET = "k3-super-secret-value"


def test_api_key_in_query_is_redacted_in_uvicorn_logs(sqlite_url):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    settings = api_settings(sqlite_url, api_key=SECRET, api_read_requires_key=True)
    loggers = [logging.getLogger(n) for n in ("uvicorn.error", "uvicorn.access")]
    with live_server(settings, log_level="info") as srv:
        for lg in loggers:
            lg.addHandler(handler)
        try:

            async def talk() -> None:
                url = f"{srv.ws_url}/ws/tweets?keyword=United&api_key={SECRET}"
                async with connect(url, open_timeout=10) as ws:
                    hello = await asyncio.wait_for(ws.recv(), 10)
                    assert "hello" in hello

            asyncio.run(talk())
            params = {"api_key": SECRET, "limit": 1}
            response = httpx.get(f"{srv.url}/tweets/latest", params=params, timeout=10)
            assert response.status_code in (200, 401)
        finally:
            for lg in loggers:
                lg.removeHandler(handler)
    logged = stream.getvalue()
    assert "WebSocket /ws/tweets?keyword=United&api_key=***" in logged
    assert "GET /tweets/latest?api_key=***" in logged
    assert SECRET not in logged


def test_redact_keeps_other_parameters():
    from api.logredact import redact

    assert redact("/ws/tweets?api_key=abc&keyword=Tesla") == "/ws/tweets?api_key=***&keyword=Tesla"
    assert redact('"GET /x?a=1&API_KEY=zz HTTP/1.1"') == '"GET /x?a=1&API_KEY=*** HTTP/1.1"'
