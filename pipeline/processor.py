"""The processor: a consumer group on `raw_tweets` that scores tweets in batches and publishes them.

For each batch (at most BATCH_SIZE records, waiting at most BATCH_WAIT_MS to fill it):
decode + text hygiene, classify the valid ones together, publish AnalyzedTweet to `analyzed_tweets`
keyed by tweet id and a DeadLetter (reason + original bytes) for each bad one, flush (acks=all),
and only THEN commit the offsets. A crash before the commit redelivers the batch; the ingestor's
idempotent writes make the repeat harmless. A failed publish is retried with backoff, never skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import ValidationError

from pipeline.bus.base import Bus, BusConsumer, BusProducer, Record
from pipeline.bus.memory import MemoryBus
from pipeline.contracts import AnalyzedTweet, DeadLetter, RawTweet, decode_raw, encode
from pipeline.deadletters import DeadLetterSink, TableDeadLetters, TopicDeadLetters, letter_for
from pipeline.engines import SentimentEngine, make_engine
from pipeline.errors import BusError, InvalidMessage, StageStopped
from pipeline.settings import Settings
from pipeline.stage import StageMonitor, collect_batch, describe, open_db, retry
from pipeline.text import clean_text

if TYPE_CHECKING:
    from db.database import Database

logger = logging.getLogger(__name__)

STAGE = "processor"


def consumer_lag(bus: Bus, consumer: BusConsumer, topic: str, group: str) -> int | None:
    if isinstance(bus, MemoryBus):
        return bus.lag(topic, group)
    lag = getattr(consumer, "lag", None)
    return lag() if callable(lag) else None


class Processor:
    """Collaborators are passed in (tests, `pipeline run`) or built on first use from settings."""

    def __init__(self, settings: Settings, *, bus: Bus | None = None, engine: SentimentEngine | None = None,
                 db: Database | None = None, group_id: str | None = None) -> None:
        self.settings = settings
        self._bus = bus
        self._engine = engine
        self._db = db
        self.group_id = group_id or settings.processor_group_id
        self.monitor: StageMonitor | None = None
        self._db_tried_at = float("-inf")

    @property
    def bus(self) -> Bus:
        if self._bus is None:
            from pipeline.bus import make_bus

            self._bus = make_bus(self.settings)
        return self._bus

    @property
    def engine(self) -> SentimentEngine:
        if self._engine is None:
            self._engine = make_engine(self.settings)
            logger.info("sentiment engine: %s", self._engine.name)
        return self._engine

    # --- one batch, no I/O -----------------------------------------------------------------
    def analyze(self, records: Sequence[Record]) -> tuple[list[AnalyzedTweet], list[DeadLetter]]:
        """Score `records`: the valid ones become AnalyzedTweets, the others dead letters."""
        letters: list[DeadLetter] = []
        valid: list[tuple[Record, RawTweet]] = []
        for record in records:
            try:
                raw = decode_raw(record.value)
                text = clean_text(raw.text, max_chars=self.settings.max_text_chars)
            except InvalidMessage as exc:
                letters.append(letter_for(record, stage=STAGE, reason=str(exc)))
                continue
            valid.append((record, raw if text == raw.text else raw.model_copy(update={"text": text})))
        if not valid:
            return [], letters
        sentiments = self._classify([raw.text for _, raw in valid], [raw.keyword for _, raw in valid])
        now = datetime.now(UTC)
        name = self.engine.name
        out: list[AnalyzedTweet] = []
        for (record, raw), sentiment in zip(valid, sentiments, strict=True):
            if isinstance(sentiment, Exception):
                letters.append(letter_for(record, stage=STAGE,
                                          reason=f"classification failed: {describe(sentiment)}"))
                continue
            try:
                out.append(AnalyzedTweet(
                    **raw.model_dump(), label=sentiment.label, p_neg=sentiment.p_neg,
                    p_neu=sentiment.p_neu, p_pos=sentiment.p_pos, score=sentiment.score,
                    engine=name, processed_at=now,
                ))
            except ValidationError as exc:
                reason = f"engine {name} gave an invalid result: {exc.errors()[0]['msg']}"
                letters.append(letter_for(record, stage=STAGE, reason=reason))
        return out, letters

    def _classify(self, texts: list[str], subjects: list[str]) -> list:
        """One result per text: a Sentiment, or the exception that text raised on its own."""
        try:
            result = self.engine.classify(texts, subjects=subjects)
            if len(result) != len(texts):
                raise InvalidMessage(f"engine returned {len(result)} results for {len(texts)} texts")
            return list(result)
        except Exception as exc:  # noqa: BLE001 - isolate the text that breaks the engine
            if len(texts) == 1:
                return [exc]
            logger.warning("batch of %d failed to classify (%s); classifying one by one", len(texts),
                           describe(exc))
            out: list = []
            for text, subject in zip(texts, subjects, strict=True):
                try:
                    out.extend(self.engine.classify([text], subjects=[subject]))
                except Exception as one:  # noqa: BLE001
                    out.append(one)
            return out

    # --- the loop ----------------------------------------------------------------------------
    def _heartbeat_db(self) -> Database | None:
        """The DB for heartbeats; on Kafka, opened again (at most once a minute) if it was down."""
        if self._db is None and time.monotonic() - self._db_tried_at > 60:
            self._db_tried_at = time.monotonic()
            from db.database import open_database

            self._db = open_database(self.settings)
        return self._db

    def run(self, stop: threading.Event) -> None:
        s = self.settings
        bus = self.bus
        embedded = isinstance(bus, MemoryBus)
        if self._db is None and embedded:
            self._db = open_db(s, stop)  # the embedded bus's dead letters go to the table
        elif self._db is None:
            try:
                self._heartbeat_db()
            except Exception as exc:  # noqa: BLE001 - the processor only needs the DB for heartbeats
                logger.warning("processor: database unavailable for heartbeats (%s); carrying on",
                               describe(exc))
        engine = self.engine
        where = "the embedded bus" if embedded else f"Kafka at {s.kafka_bootstrap_servers}"
        try:
            retry(lambda: bus.ensure_topics([s.raw_topic, s.analyzed_topic, s.dead_letter_topic]),
                  what=f"processor: create topics on {where}", settings=s, stop=stop, retry_on=(BusError,))
            consumer = retry(lambda: bus.consumer([s.raw_topic], group_id=self.group_id),
                             what=f"processor: join group {self.group_id} on {where}", settings=s, stop=stop,
                             retry_on=(BusError,))
        except StageStopped:
            logger.info("processor: stopped before it started")
            return
        producer = retry(bus.producer, what=f"processor: connect producer to {where}", settings=s,
                         stop=stop, retry_on=(BusError,))
        sink: DeadLetterSink = TableDeadLetters(self._db) if embedded else \
            TopicDeadLetters(producer, s.dead_letter_topic)
        monitor = self.monitor = StageMonitor(STAGE, s, db=self._heartbeat_db, engine=engine.name)
        logger.info("processor started: %s -> %s on %s, group %s, batch %d / %d ms, engine %s",
                    s.raw_topic, s.analyzed_topic, where, self.group_id, s.batch_size, s.batch_wait_ms,
                    engine.name)
        try:
            while not stop.is_set():
                batch = retry(lambda: collect_batch(consumer, max_records=s.batch_size,
                                                    max_wait_s=s.batch_wait_ms / 1000, stop=stop),
                              what=f"processor: poll {s.raw_topic}", settings=s, stop=stop,
                              retry_on=(BusError,))
                if batch:
                    self._handle(batch, producer, sink, consumer, stop)
                monitor.tick(lag=consumer_lag(bus, consumer, s.raw_topic, self.group_id))
        except StageStopped:
            logger.info("processor: stop requested while retrying; the uncommitted batch will be redelivered")
        finally:
            monitor.tick(force=True)
            for close in (consumer.close, producer.close):
                try:
                    close()
                except Exception as exc:  # noqa: BLE001 - closing must not hide the real outcome
                    logger.warning("processor: close failed: %s", describe(exc))
            logger.info("processor stopped: %d tweets, %d dead-lettered", monitor.total, monitor.failed)

    def _handle(self, batch: list[Record], producer: BusProducer, sink: DeadLetterSink,
                consumer: BusConsumer, stop: threading.Event) -> None:
        s = self.settings
        tweets, letters = self.analyze(batch)

        def deliver() -> None:
            for tweet in tweets:
                producer.send(s.analyzed_topic, key=tweet.id, value=encode(tweet))
            producer.flush()
            sink.write(letters)

        first, last = batch[0], batch[-1]
        retry(deliver, what=f"processor: publish {len(tweets)} tweets ({first.where()} .. {last.where()})",
              settings=s, stop=stop)
        retry(consumer.commit, what="processor: commit offsets", settings=s, stop=stop, retry_on=(BusError,))
        assert self.monitor is not None
        self.monitor.add(len(tweets), failed=len(letters))
