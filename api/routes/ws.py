"""WebSocket endpoints: /ws/tweets (every newly stored tweet) and /ws/sentiment (current minute).

Each socket has two tasks: a reader (to see close frames and vanished peers) and a sender that
drains its queue, sending at most one frame per WS_BATCH_MS. A send that does not complete within
SEND_TIMEOUT_SECONDS means the peer stopped reading: it is closed with 1013 (try again later) and
removed; other sockets are never waited on. Idle sockets get a {"type":"ping"} frame every
WS_PING_SECONDS (the ASGI server also sends protocol pings).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket, status
from starlette.websockets import WebSocketDisconnect, WebSocketState

from api.notifier import Subscriber
from api.params import BadParameter, keyword_filter
from api.state import AppState

logger = logging.getLogger(__name__)
router = APIRouter(tags=["live"])

SEND_TIMEOUT_SECONDS = 10.0
CLOSE_TOO_SLOW = 1013
CLOSE_UNAVAILABLE = 1011


class _Refused(Exception):
    """A socket to accept and close at once with `code` and `reason` (see `_refuse`)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _check(ws: WebSocket, state: AppState, keyword: str | None, api_key: str | None) -> str | None:
    settings = state.settings
    if settings.api_key is not None and settings.api_read_requires_key:
        presented = ws.headers.get("x-api-key") or api_key or ""
        if not hmac.compare_digest(presented.encode(), settings.api_key.get_secret_value().encode()):
            raise _Refused(status.WS_1008_POLICY_VIOLATION, "missing or wrong API key")
    try:
        return keyword_filter(keyword, param="keyword")
    except BadParameter as exc:
        raise _Refused(status.WS_1008_POLICY_VIOLATION, str(exc)) from None


def _reason(text: str) -> str:
    # A close frame's reason is at most 123 bytes of UTF-8; cut on a character boundary.
    return text.encode()[:123].decode(errors="ignore")


async def _refuse(ws: WebSocket, refused: _Refused) -> None:
    """Accept, then close with the documented code and a reason.

    Closing before accepting makes the ASGI server answer the handshake with a bare HTTP 403, which
    browsers and most clients report without the code or the reason; after the handshake the close
    frame carries both."""
    logger.info("ws %s refused (%d): %s", ws.url.path, refused.code, refused.reason)
    with contextlib.suppress(Exception):
        await ws.accept()
        await ws.close(refused.code, _reason(refused.reason))


async def _open(ws: WebSocket, state: AppState, keyword: str | None, api_key: str | None, source):
    """Check the parameters and that the feed's `source` (notifier or hub) is up, then accept:
    (keyword, source), or None once the socket was closed with the documented code."""
    try:
        keyword = _check(ws, state, keyword, api_key)
    except _Refused as refused:
        await _refuse(ws, refused)
        return None
    if source is None:
        await _refuse(ws, _Refused(CLOSE_UNAVAILABLE, f"database unavailable: {state.db_error}"))
        return None
    await ws.accept()
    return keyword, source


async def _reader(ws: WebSocket) -> None:
    # Clients have nothing to say; reading keeps close frames and dead peers noticed.
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _sender(ws: WebSocket, sub: Subscriber, state: AppState, frame) -> None:
    settings = state.settings
    batch = settings.ws_batch_ms / 1000
    metrics = state.metrics
    while True:
        if not await sub.wait(settings.ws_ping_seconds):
            await asyncio.wait_for(ws.send_text('{"type":"ping"}'), SEND_TIMEOUT_SECONDS)
            continue
        items, dropped = sub.drain()
        if dropped:
            logger.info("ws %s client too slow: %d item(s) dropped", sub.channel, dropped)
        await asyncio.wait_for(ws.send_text(frame(items, dropped)), SEND_TIMEOUT_SECONDS)
        metrics.ws_messages.labels(channel=sub.channel).inc()
        await asyncio.sleep(batch)  # what arrives meanwhile goes out in the next frame


def _tweets_frame(items: list[str], dropped: int) -> str:
    # The items are JSON already (serialised once for all clients): splice, do not re-encode.
    return '{"type":"tweets","dropped":' + str(dropped) + ',"data":[' + ",".join(items) + "]}"


def _latest_frame(items: list[str], dropped: int) -> str:
    return items[-1]


async def _serve(ws: WebSocket, state: AppState, sub: Subscriber, frame, unsubscribe) -> None:
    gauge = state.metrics.ws_clients.labels(channel=sub.channel)
    gauge.inc()
    reader = asyncio.create_task(_reader(ws))
    sender = asyncio.create_task(_sender(ws, sub, state, frame))
    try:
        done, _ = await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
        if sender in done and isinstance(sender.exception(), TimeoutError):
            state.metrics.ws_disconnects.labels(channel=sub.channel).inc()
            logger.info("ws %s client stopped reading; closing with %d", sub.channel, CLOSE_TOO_SLOW)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(CLOSE_TOO_SLOW, "client too slow"), 1.0)
        elif sender in done and sender.exception() is not None:
            # A vanished peer shows up as a failed send; that is a normal way to leave.
            logger.debug("ws %s send ended: %r", sub.channel, sender.exception())
    finally:
        unsubscribe(sub)
        gauge.dec()
        for task in (reader, sender):
            task.cancel()
        for task in (reader, sender):
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                await task


@router.websocket("/ws/tweets")
async def ws_tweets(
    ws: WebSocket,
    keyword: Annotated[str | None, Query(description="Only tweets of this keyword.")] = None,
    api_key: Annotated[str | None, Query(description="API key, when reads require one.")] = None,
) -> None:
    state: AppState = ws.app.state.sp
    opened = await _open(ws, state, keyword, api_key, state.notifier)
    if opened is None:
        return
    keyword, notifier = opened
    sub = notifier.subscribe(keyword)
    try:
        await ws.send_text(
            json.dumps(
                {"type": "hello", "channel": "tweets", "keyword": keyword, "last_seq": notifier.last_seq}
            )
        )
    except Exception:  # noqa: BLE001 - gone already
        notifier.unsubscribe(sub)
        return
    await _serve(ws, state, sub, _tweets_frame, notifier.unsubscribe)


@router.websocket("/ws/sentiment")
async def ws_sentiment(
    ws: WebSocket,
    keyword: Annotated[str | None, Query(description="Only this keyword's aggregate.")] = None,
    api_key: Annotated[str | None, Query(description="API key, when reads require one.")] = None,
) -> None:
    state: AppState = ws.app.state.sp
    opened = await _open(ws, state, keyword, api_key, state.sentiment_hub)
    if opened is None:
        return
    keyword, hub = opened
    sub = hub.subscribe(keyword)
    try:
        first = await hub.current(keyword)
        sub.last_payload = first
        await ws.send_text(first)
    except Exception as exc:  # noqa: BLE001 - DB down or peer gone
        hub.unsubscribe(sub)
        if ws.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await ws.close(CLOSE_UNAVAILABLE, _reason(f"unavailable: {exc}"))
        return
    await _serve(ws, state, sub, _latest_frame, hub.unsubscribe)
