"""The ingestor: consumes `analyzed_tweets` and writes them to the database in batches.

Each batch (at most INGEST_BATCH_SIZE, waiting at most INGEST_BATCH_WAIT_MS) is written in one
transaction through `db.writes.write_tweets` (idempotent: a redelivered tweet adds no row), and the
offsets are committed only after that transaction committed. While the database is unreachable the
same batch is retried with backoff, one log line per attempt: nothing is committed, nothing skipped.
A message that is not a valid AnalyzedTweet, or a row the database rejects, becomes a dead letter.

On Kafka it also copies the dead-letter topic into the `dead_letters` table, so dead letters can be
listed and replayed from one place whichever bus is used.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.exc import DataError, DisconnectionError, IntegrityError, InterfaceError, OperationalError

from pipeline.bus.base import Bus, BusConsumer, Record
from pipeline.bus.memory import MemoryBus
from pipeline.contracts import AnalyzedTweet, DeadLetter, decode_analyzed, decode_dead_letter
from pipeline.deadletters import letter_for
from pipeline.errors import BusError, InvalidMessage, StageStopped
from pipeline.processor import consumer_lag
from pipeline.settings import Settings
from pipeline.stage import StageMonitor, collect_batch, describe, open_db, retry

if TYPE_CHECKING:
    from db.database import Database

logger = logging.getLogger(__name__)

STAGE = "ingestor"


def is_transient(exc: BaseException) -> bool:
    """True for 'the database is not there right now' errors, which are retried, not dead-lettered."""
    from db.database import DatabaseUnavailable

    if isinstance(exc, DatabaseUnavailable | OperationalError | InterfaceError | DisconnectionError):
        return True
    cause = exc.__cause__
    return cause is not None and cause is not exc and is_transient(cause)


def rejects_rows(exc: BaseException) -> bool:
    """True when the database refused the data itself (bad value, constraint): the batch is split
    to dead-letter the offending rows. Anything else (missing table, bug) is retried instead, so a
    broken deployment never dead-letters a whole stream."""
    if isinstance(exc, DataError | IntegrityError | ValueError | TypeError):
        return True
    cause = exc.__cause__
    return cause is not None and cause is not exc and rejects_rows(cause)


class Ingestor:
    def __init__(self, settings: Settings, *, bus: Bus | None = None, db: Database | None = None,
                 group_id: str | None = None) -> None:
        self.settings = settings
        self._bus = bus
        self.db = db
        self.group_id = group_id or settings.ingestor_group_id
        self.monitor: StageMonitor | None = None
        self.inserted = 0

    @property
    def bus(self) -> Bus:
        if self._bus is None:
            from pipeline.bus import make_bus

            self._bus = make_bus(self.settings)
        return self._bus

    # --- one batch ---------------------------------------------------------------------------
    def split(self, records: Sequence[Record]) -> tuple[list[tuple[Record, AnalyzedTweet]], list[DeadLetter]]:
        """Decode a batch: analyzed tweets to store, and dead letters (copied or new)."""
        tweets: list[tuple[Record, AnalyzedTweet]] = []
        letters: list[DeadLetter] = []
        for record in records:
            try:
                if record.topic == self.settings.dead_letter_topic:
                    letters.append(decode_dead_letter(record.value))
                else:
                    tweets.append((record, decode_analyzed(record.value)))
            except InvalidMessage as exc:
                letters.append(letter_for(record, stage=STAGE, reason=str(exc)))
        return tweets, letters

    def store(self, tweets: list[tuple[Record, AnalyzedTweet]], letters: list[DeadLetter]) -> int:
        """Write the batch; rows the database rejects become dead letters. Transient errors raise."""
        from db.writes import write_dead_letters

        assert self.db is not None
        rejected: list[DeadLetter] = []
        inserted = self._write(tweets, rejected)
        if letters or rejected:
            for letter in rejected:
                logger.warning("dead letter from %s[%s] %s (ingestor): %s", letter.topic, letter.partition,
                               letter.offset, letter.reason)
            write_dead_letters(self.db, [*letters, *rejected])
        return inserted

    def _write(self, tweets: list[tuple[Record, AnalyzedTweet]], rejected: list[DeadLetter]) -> int:
        """Write in one transaction; if the database rejects the batch (not a connection problem),
        split it in halves to find the rows it rejects, so one bad row does not block the stream."""
        from db.writes import write_tweets

        if not tweets:
            return 0
        try:
            return write_tweets(self.db, [t for _, t in tweets])
        except Exception as exc:
            if is_transient(exc) or not rejects_rows(exc):
                raise
            if len(tweets) == 1:
                record = tweets[0][0]
                rejected.append(letter_for(record, stage=STAGE, reason=f"database rejected the row: "
                                                                      f"{describe(exc)}"))
                return 0
            mid = len(tweets) // 2
            return self._write(tweets[:mid], rejected) + self._write(tweets[mid:], rejected)

    # --- the loop ----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        s = self.settings
        bus = self.bus
        embedded = isinstance(bus, MemoryBus)
        where = "the embedded bus" if embedded else f"Kafka at {s.kafka_bootstrap_servers}"
        # On the embedded bus the processor writes dead letters to the table itself.
        topics = [s.analyzed_topic] if embedded else [s.analyzed_topic, s.dead_letter_topic]
        try:
            if self.db is None:
                self.db = open_db(s, stop)
            retry(lambda: bus.ensure_topics(topics), what=f"ingestor: create topics on {where}",
                  settings=s, stop=stop, retry_on=(BusError,))
            consumer = retry(lambda: bus.consumer(topics, group_id=self.group_id),
                             what=f"ingestor: join group {self.group_id} on {where}", settings=s, stop=stop,
                             retry_on=(BusError,))
        except StageStopped:
            logger.info("ingestor: stopped before it started")
            return
        db = self.db
        monitor = self.monitor = StageMonitor(STAGE, s, db=lambda: db)
        logger.info("ingestor started: %s -> %s (%s), group %s, batch %d / %d ms", ", ".join(topics),
                    db.safe_url(), db.mode, self.group_id, s.ingest_batch_size, s.ingest_batch_wait_ms)
        try:
            while not stop.is_set():
                batch = retry(lambda: collect_batch(consumer, max_records=s.ingest_batch_size,
                                                    max_wait_s=s.ingest_batch_wait_ms / 1000, stop=stop),
                              what=f"ingestor: poll {', '.join(topics)}", settings=s, stop=stop,
                              retry_on=(BusError,))
                if batch:
                    self._handle(batch, consumer, stop)
                monitor.tick(lag=consumer_lag(bus, consumer, s.analyzed_topic, self.group_id))
        except StageStopped:
            logger.info("ingestor: stop requested while retrying; the uncommitted batch will be redelivered")
        finally:
            monitor.tick(force=True)
            try:
                consumer.close()
            except Exception as exc:  # noqa: BLE001
                logger.warning("ingestor: close failed: %s", describe(exc))
            logger.info("ingestor stopped: %d tweets received, %d rows inserted, %d dead letters",
                        monitor.total, self.inserted, monitor.failed)

    def _handle(self, batch: list[Record], consumer: BusConsumer, stop: threading.Event) -> None:
        s = self.settings
        tweets, letters = self.split(batch)
        first, last = batch[0], batch[-1]
        inserted = retry(lambda: self.store(tweets, letters),
                         what=f"ingestor: write {len(tweets)} tweets ({first.where()} .. {last.where()})",
                         settings=s, stop=stop, retry_on=(Exception,))
        retry(consumer.commit, what="ingestor: commit offsets", settings=s, stop=stop, retry_on=(BusError,))
        self.inserted += inserted
        assert self.monitor is not None
        self.monitor.add(len(tweets), failed=len(letters))
