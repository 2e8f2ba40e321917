"""One notifier per process: learns about newly stored tweets once and fans them out to every socket.

On PostgreSQL a dedicated connection LISTENs on `streampulse_tweets` (the ingestor NOTIFYs after each
commit) in a thread, with a slow safety poll; on SQLite, or when LISTEN fails, it polls
`db.queries.max_seq` every NOTIFY_POLL_SECONDS. New rows are read once (`db.queries.tweets_after`),
serialised once, and offered to each subscriber's bounded queue: a full queue drops the item for
that client only, so a slow reader never stalls the others.

Each tweet goes out once: the notifier keeps the highest seq it delivered and reads strictly after
it. That relies on rows becoming visible in seq order, which db.writes guarantees on PostgreSQL by
taking a transaction-level advisory lock around every insert (SQLite serialises writers anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import select
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from anyio import to_thread

from api.schemas import TweetPublic

if TYPE_CHECKING:
    from api.metrics import ApiMetrics

logger = logging.getLogger(__name__)

FETCH_LIMIT = 1000
LISTEN_SAFETY_POLL_SECONDS = 5.0


class Subscriber:
    """One socket's view of a channel: an optional keyword filter and a bounded queue of JSON items."""

    def __init__(self, *, channel: str, keyword: str | None, queue_size: int) -> None:
        self.channel = channel
        self.keyword = keyword
        self.key = keyword.lower() if keyword else None
        self.maxsize = queue_size
        self.items: deque[str] = deque()
        self.dropped = 0
        self.last_payload: str | None = None
        self._ready = asyncio.Event()

    def offer(self, item: str, *, replace: bool = False) -> bool:
        """Queue an item; when full, drop it (or, with replace, the oldest: latest-value channels)."""
        if len(self.items) >= self.maxsize:
            if not replace:
                self.dropped += 1
                return False
            self.items.popleft()
        self.items.append(item)
        self._ready.set()
        return True

    async def wait(self, timeout: float) -> bool:
        if not self.items:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout)
        return bool(self.items)

    def drain(self) -> tuple[list[str], int]:
        items = list(self.items)
        self.items.clear()
        dropped, self.dropped = self.dropped, 0
        return items, dropped


def tweet_json(row: Any) -> str:
    return TweetPublic.model_validate(row).model_dump_json()


def _pg_listen_connection(db: Any) -> Any:
    """A dedicated (unpooled) DBAPI connection for LISTEN, built from the engine's own connect args.

    LISTEN is the one statement outside db/: it is a session command, not a query, and it has to
    live on this thread's own connection."""
    from db.schema import NOTIFY_CHANNEL

    dialect = db.engine.dialect
    cargs, cparams = dialect.create_connect_args(db.engine.url)
    conn = dialect.dbapi.connect(*cargs, **cparams)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"LISTEN {NOTIFY_CHANNEL}")
    return conn


class TweetNotifier:
    def __init__(self, db: Any, settings: Any, metrics: ApiMetrics | None = None) -> None:
        self.db = db
        self.settings = settings
        self.metrics = metrics
        self.subscribers: set[Subscriber] = set()
        self.last_seq = 0
        self.listening = False
        self._wake = asyncio.Event()
        self._stop = threading.Event()
        self._task: asyncio.Task | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.changed = asyncio.Event()  # set whenever new rows were seen (the sentiment hub reads it)

    # --- subscription ----------------------------------------------------------------------
    def subscribe(self, keyword: str | None) -> Subscriber:
        sub = Subscriber(channel="tweets", keyword=keyword, queue_size=self.settings.ws_queue_size)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        from db import queries

        self._loop = asyncio.get_running_loop()
        self.last_seq = await to_thread.run_sync(queries.max_seq, self.db)
        if self.db.mode in ("postgresql", "timescaledb"):
            self._thread = threading.Thread(target=self._listen_forever, name="ws-notify-listen", daemon=True)
            self._thread.start()
        self._task = asyncio.create_task(self._run(), name="ws-notifier")
        logger.info("WebSocket notifier started (mode=%s, from seq %d)", self.db.mode, self.last_seq)

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._thread:
            await to_thread.run_sync(self._thread.join, 3.0)

    def poke(self) -> None:
        """Wake the fetch loop now (thread-safe)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    # --- PostgreSQL LISTEN thread ----------------------------------------------------------
    def _listen_forever(self) -> None:
        backoff = self.settings.retry_initial_backoff_seconds
        while not self._stop.is_set():
            conn = None
            try:
                conn = _pg_listen_connection(self.db)
                self.listening = True
                backoff = self.settings.retry_initial_backoff_seconds
                self.poke()  # catch up on anything committed before LISTEN took effect
                while not self._stop.is_set():
                    readable, _, _ = select.select([conn], [], [], 1.0)
                    if readable:
                        conn.poll()
                        if conn.notifies:
                            conn.notifies.clear()
                            self.poke()
            except Exception as exc:  # noqa: BLE001 - any failure: fall back to polling, retry later
                if self.listening or backoff == self.settings.retry_initial_backoff_seconds:
                    logger.warning("LISTEN failed (%s); polling max_seq until it is back", exc)
                self.listening = False
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.settings.retry_max_backoff_seconds)
            finally:
                self.listening = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()

    # --- fetch loop ------------------------------------------------------------------------
    def _poll_interval(self) -> float:
        if self.listening:
            return LISTEN_SAFETY_POLL_SECONDS
        return self.settings.notify_poll_seconds

    async def _run(self) -> None:
        backoff = self.settings.retry_initial_backoff_seconds
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval())
            self._wake.clear()
            try:
                await self._fetch()
                backoff = self.settings.retry_initial_backoff_seconds
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - DB down: keep sockets open, retry with backoff
                logger.warning("notifier fetch failed (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.retry_max_backoff_seconds)

    async def _fetch(self) -> None:
        from db import queries

        if not self.subscribers:
            # Nobody listens: only move the mark, so a later subscriber gets tweets from then on.
            seq = await to_thread.run_sync(queries.max_seq, self.db)
            if seq > self.last_seq:
                self.last_seq = seq
                self.changed.set()
            return
        if not self.listening:
            # Polling: one cheap max() per tick; only read rows when there is something new.
            seq = await to_thread.run_sync(queries.max_seq, self.db)
            if seq <= self.last_seq:
                return
        while True:
            after = self.last_seq
            rows = await to_thread.run_sync(
                lambda after=after: queries.tweets_after(self.db, after_seq=after, limit=FETCH_LIMIT)
            )
            fresh = [row for row in rows if row.seq > after]
            if fresh:
                self.last_seq = fresh[-1].seq
                self._fan_out(fresh)
            if len(rows) < FETCH_LIMIT:
                break

    def _fan_out(self, rows: list[Any]) -> None:
        if self.metrics:
            self.metrics.notify_rows.inc(len(rows))
        self.changed.set()
        encoded = [(row.keyword.lower(), tweet_json(row)) for row in rows]
        dropped = 0
        for sub in list(self.subscribers):
            for key, item in encoded:
                if (sub.key is None or sub.key == key) and not sub.offer(item):
                    dropped += 1
        if dropped and self.metrics:
            self.metrics.ws_dropped.labels(channel="tweets").inc(dropped)


def sentiment_payload(rows: list[dict], keyword: str | None) -> dict:
    key = keyword.lower() if keyword else None
    picked = [r for r in rows if key is None or str(r.get("keyword", "")).lower() == key]
    return {"type": "sentiment", "keyword": keyword, "data": picked}


def encode(payload: dict) -> str:
    return json.dumps(payload, default=_json_default, separators=(",", ":"))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        # The REST serialisation (pydantic): UTC with a "Z", so WS and REST timestamps compare equal
        # as strings. Naive values come from SQLite, which stores UTC.
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return aware.isoformat().replace("+00:00", "Z")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "__float__"):
        return float(value)
    return str(value)


class SentimentHub:
    """Pushes the current minute's aggregate to /ws/sentiment clients when it changes, at most
    every WS_SENTIMENT_INTERVAL_SECONDS; one query per tick for all clients together."""

    def __init__(
        self, db: Any, settings: Any, notifier: TweetNotifier, metrics: ApiMetrics | None = None
    ) -> None:
        self.db = db
        self.settings = settings
        self.notifier = notifier
        self.metrics = metrics
        self.subscribers: set[Subscriber] = set()
        self._task: asyncio.Task | None = None
        self._minute: int | None = None

    def subscribe(self, keyword: str | None) -> Subscriber:
        # Latest value wins: a queue of one, replaced rather than dropped.
        sub = Subscriber(channel="sentiment", keyword=keyword, queue_size=1)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    async def current(self, keyword: str | None) -> str:
        from db import queries

        rows = await to_thread.run_sync(
            lambda: queries.minute_aggregate(self.db, keywords=[keyword] if keyword else None)
        )
        return encode(sentiment_payload(rows, keyword))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ws-sentiment")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        from db import queries

        interval = self.settings.ws_sentiment_interval_seconds
        while True:
            await asyncio.sleep(interval)
            if not self.subscribers:
                continue
            minute = int(time.time() // 60)
            if not self.notifier.changed.is_set() and minute == self._minute:
                continue
            self.notifier.changed.clear()
            self._minute = minute
            try:
                rows = await to_thread.run_sync(lambda: queries.minute_aggregate(self.db, keywords=None))
            except Exception as exc:  # noqa: BLE001 - DB down: try again next tick
                logger.warning("sentiment aggregate failed: %s", exc)
                continue
            for sub in list(self.subscribers):
                text = encode(sentiment_payload(rows, sub.keyword))
                if text != sub.last_payload:
                    sub.last_payload = text
                    sub.offer(text, replace=True)
