"""What every producer shares: publishing RawTweets to `raw_tweets` with acks=all, retrying a
failed flush with backoff (re-sending what was not acknowledged), flushing on shutdown, heartbeats.

A producer module (mock, replay, x) exposes `run_<source>_producer(settings, *, bus, db, stop,
keywords=None, ...)`, which runs until its input ends or `stop` is set.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic_core import PydanticSerializationError

from pipeline.bus.base import Bus, BusProducer
from pipeline.contracts import RawTweet, encode
from pipeline.errors import BusError, StageStopped
from pipeline.settings import Settings
from pipeline.stage import StageMonitor, retry

if TYPE_CHECKING:
    from db.database import Database

logger = logging.getLogger(__name__)

FLUSH_EVERY = 2000  # messages: bounds what one failed flush has to re-send
FLUSH_SECONDS = 0.25  # a slow stream is still delivered promptly (latency)
KEYWORD_REFRESH_SECONDS = 5.0  # how soon a keyword added in the dashboard/API gets tweets


def encode_raw(tweet: RawTweet) -> bytes:
    """The wire bytes of `tweet`. Text with a lone surrogate (a JSON `\\ud83d` escape in an export)
    cannot be UTF-8 encoded; json.dumps escapes it as ASCII, so it still goes on the bus and the
    processor's text hygiene (pipeline/text.py) replaces it with U+FFFD."""
    try:
        return encode(tweet)
    except (PydanticSerializationError, UnicodeEncodeError):
        return json.dumps(tweet.model_dump(mode="json")).encode("ascii")


class Publisher:
    """Sends RawTweets to the raw topic; everything sent is acknowledged by the time `flush` or
    `close` returns, or re-sent until it is."""

    def __init__(self, settings: Settings, bus: Bus, *, stop: threading.Event,
                 monitor: StageMonitor | None = None) -> None:
        self.settings = settings
        self.stop = stop
        self.monitor = monitor
        where = "the embedded bus" if settings.embedded else f"Kafka at {settings.kafka_bootstrap_servers}"
        retry(lambda: bus.ensure_topics([settings.raw_topic]), what=f"producer: create topics on {where}",
              settings=settings, stop=stop, retry_on=(BusError,))
        self._producer: BusProducer = retry(bus.producer, what=f"producer: connect to {where}",
                                            settings=settings, stop=stop, retry_on=(BusError,))
        self._unacked: list[tuple[str, bytes]] = []
        self._flushed_at = time.monotonic()
        self.sent = 0

    def send(self, tweet: RawTweet) -> None:
        self.send_raw(tweet.id, encode_raw(tweet))

    def send_raw(self, key: str, value: bytes) -> None:
        self._unacked.append((key, value))
        try:
            self._producer.send(self.settings.raw_topic, key=key, value=value)
        except BusError as exc:
            logger.warning("producer: send failed (%s); will re-send at the next flush", exc)
        if len(self._unacked) >= FLUSH_EVERY or time.monotonic() - self._flushed_at >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Wait for acks=all on everything sent; on failure re-send the unacknowledged and retry."""
        if not self._unacked:
            self._flushed_at = time.monotonic()
            return
        attempt = {"n": 0}

        def deliver() -> None:
            attempt["n"] += 1
            if attempt["n"] > 1:  # the failed flush lost track of which ones made it: send them all again
                for key, value in self._unacked:
                    self._producer.send(self.settings.raw_topic, key=key, value=value)
            self._producer.flush()

        retry(deliver, what=f"producer: deliver {len(self._unacked)} tweets to {self.settings.raw_topic}",
              settings=self.settings, stop=self.stop, retry_on=(BusError,))
        n = len(self._unacked)
        self._unacked = []
        self.sent += n
        self._flushed_at = time.monotonic()
        if self.monitor is not None:
            self.monitor.add(n)
            self.monitor.tick()

    def close(self) -> None:
        """Flush what is left (even after a stop request: those tweets were already read), then close."""
        try:
            if self._unacked:
                retry(self._producer.flush, what="producer: final flush", settings=self.settings,
                      stop=threading.Event(), retry_on=(BusError,), attempts=5)
                self.sent += len(self._unacked)
                if self.monitor is not None:
                    self.monitor.add(len(self._unacked))
                self._unacked = []
        finally:
            if self.monitor is not None:
                self.monitor.tick(force=True)
            self._producer.close()


def publish_all(settings: Settings, *, bus: Bus, db: Database | None, stop: threading.Event, stage: str,
                tweets: Iterable[RawTweet | tuple[str, bytes]],
                details: Callable[[], dict[str, Any]] | None = None) -> int:
    """Publish `tweets` until they end or `stop` is set; returns how many were acknowledged.
    An item may be (key, raw bytes): input that is not a valid RawTweet, sent on to be dead-lettered."""
    monitor = StageMonitor(stage, settings, db=lambda: db)
    try:
        publisher = Publisher(settings, bus, stop=stop, monitor=monitor)
    except StageStopped:
        logger.info("%s: stopped before it started", stage)
        return 0
    finished = threading.Event()

    def keep_beating() -> None:
        # A paced replay waits between tweets (a data gap can be minutes): the stage is alive meanwhile.
        while not finished.wait(settings.heartbeat_interval_seconds):
            monitor.tick()

    threading.Thread(target=keep_beating, name=f"{stage}-keepalive", daemon=True).start()
    try:
        for tweet in tweets:
            if details is not None:
                monitor.details = details()
            if isinstance(tweet, RawTweet):
                publisher.send(tweet)
            else:
                publisher.send_raw(*tweet)
            if stop.is_set():
                break
        publisher.flush()
    except StageStopped:
        logger.info("%s: stop requested while retrying", stage)
    finally:
        finished.set()
        # "done": the input ended (a replay that is played); a runner that carries on keeps beating it
        monitor.details = {**monitor.details, "state": "stopped" if stop.is_set() else "done"}
        publisher.close()
        if stop.is_set():
            monitor.mark_stopped()
        logger.info("%s stopped: %d tweets published", stage, publisher.sent)
    return publisher.sent


def dedupe_keywords(keywords: Sequence[str]) -> list[str]:
    """Strip, drop empties, and keep the first spelling of each case-insensitive keyword."""
    seen: set[str] = set()
    out: list[str] = []
    for keyword in keywords:
        keyword = keyword.strip()
        if keyword and keyword.lower() not in seen:
            seen.add(keyword.lower())
            out.append(keyword)
    return out


class TrackedKeywords:
    """The keywords to produce for: a fixed list, or `tracked_keywords` re-read every few seconds,
    so keywords added at run time (dashboard, API) are picked up without a restart."""

    def __init__(self, settings: Settings, db: Database | None, *, fixed: Sequence[str] | None = None,
                 refresh_seconds: float | None = None) -> None:
        self.db = db
        self.fixed = dedupe_keywords(fixed) if fixed else None
        self.refresh_seconds = KEYWORD_REFRESH_SECONDS if refresh_seconds is None else refresh_seconds
        self._current = self.fixed or dedupe_keywords(settings.keywords)
        self._read_at = float("-inf")
        if self.fixed is None and db is not None:
            try:
                from db.writes import seed_keywords

                seed_keywords(db, list(settings.keywords))
            except Exception as exc:  # noqa: BLE001 - the configured list still works without the table
                logger.warning("could not seed tracked keywords: %s", exc)

    def current(self) -> list[str]:
        if self.fixed is not None or self.db is None:
            return self._current
        now = time.monotonic()
        if now - self._read_at < self.refresh_seconds:
            return self._current
        self._read_at = now
        try:
            from db.queries import keywords

            found = dedupe_keywords([k.keyword for k in keywords(self.db) if k.tracked])
        except Exception as exc:  # noqa: BLE001 - keep the last known list while the DB is away
            logger.warning("could not read tracked keywords (keeping %s): %s", self._current, exc)
            return self._current
        if found and found != self._current:
            logger.info("producing for %d keyword(s): %s", len(found), ", ".join(found))
            self._current = found
        return self._current
