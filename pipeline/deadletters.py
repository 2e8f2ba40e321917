"""Dead letters: where messages that cannot be processed go, with the reason and the original bytes.

On Kafka the processor sends them to the dead-letter topic and the ingestor copies that topic into
the `dead_letters` table; on the embedded bus the stages write the table directly. Either way
`python -m pipeline dead-letters list|replay` works from the table.
"""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING, Protocol

from pipeline.bus.base import BusProducer, Record
from pipeline.contracts import DeadLetter, decode_analyzed, encode
from pipeline.errors import InvalidMessage
from pipeline.settings import Settings

if TYPE_CHECKING:
    from db.database import Database
    from pipeline.engines import SentimentEngine

logger = logging.getLogger(__name__)


def letter_for(record: Record, *, stage: str, reason: str) -> DeadLetter:
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    return DeadLetter.of(stage=stage, reason=reason, payload=record.value, topic=record.topic,
                         partition=record.partition, offset=record.offset, key=key)


class DeadLetterSink(Protocol):
    def write(self, letters: list[DeadLetter]) -> None:
        """Make `letters` durable (the stage commits offsets only after this); raise if it cannot.
        Writing the same letters again after a failure is allowed (at-least-once)."""


def _log(letters: list[DeadLetter]) -> None:
    for letter in letters:
        logger.warning("dead letter from %s[%s] %s (%s): %s", letter.topic, letter.partition,
                       letter.offset, letter.stage, letter.reason)


class TopicDeadLetters:
    """Dead letters to the dead-letter topic, through the stage's own producer."""

    def __init__(self, producer: BusProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    def write(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        _log(letters)
        for letter in letters:
            self._producer.send(self._topic, key=letter.key or f"{letter.topic}-{letter.offset}",
                                value=encode(letter))
        self._producer.flush()


class TableDeadLetters:
    """Dead letters to the `dead_letters` table (embedded bus, and the ingestor on Kafka)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def write(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        from db.writes import write_dead_letters

        _log(letters)
        write_dead_letters(self._db, letters)


# --- `python -m pipeline dead-letters list|replay` ----------------------------------------------

def pending(db: Database, *, seqs: list[int] | None = None, limit: int = 500) -> list[dict]:
    """Dead letters not replayed yet (newest first), or exactly the ones in `seqs`."""
    from db.queries import dead_letters

    rows = dead_letters(db, limit=limit)
    if seqs:
        return [r for r in rows if r["seq"] in set(seqs)]
    return [r for r in rows if r.get("replayed_at") is None]


def replay_embedded(settings: Settings, db: Database, letters: list[dict], *,
                    engine: SentimentEngine | None = None) -> tuple[list[int], list[tuple[int, str]]]:
    """No broker to send them back to: run each letter through the processor's checks and the
    ingestor's write here. Returns (seqs stored, [(seq, why it still fails)])."""
    from db.writes import write_tweets
    from pipeline.processor import Processor

    processor = Processor(settings, bus=None, engine=engine, db=db)
    done: list[int] = []
    failing: list[tuple[int, str]] = []
    for row in letters:
        payload = base64.b64decode(row["payload_b64"])
        topic = row.get("topic") or settings.raw_topic
        try:
            if topic == settings.analyzed_topic:
                tweets = [decode_analyzed(payload)]
            elif topic == settings.raw_topic:
                record = Record(topic, row.get("partition") or 0, row.get("offset") or 0, None, payload)
                tweets, letters_again = processor.analyze([record])
                if letters_again:
                    raise InvalidMessage(letters_again[0].reason)
            else:
                raise InvalidMessage(f"cannot replay a message from topic {topic!r}")
            write_tweets(db, tweets)
        except InvalidMessage as exc:
            failing.append((row["seq"], str(exc)))
            continue
        done.append(row["seq"])
    return done, failing


def replay_to_bus(settings: Settings, letters: list[dict],
                  producer: BusProducer) -> tuple[list[int], list[tuple[int, str]]]:
    """Send each letter's original bytes back to its original topic; flushed (acks=all)."""
    done: list[int] = []
    failing: list[tuple[int, str]] = []
    for row in letters:
        topic = row.get("topic") or settings.raw_topic
        if topic not in (settings.raw_topic, settings.analyzed_topic):
            failing.append((row["seq"], f"cannot replay a message from topic {topic!r}"))
            continue
        producer.send(topic, key=row.get("key") or f"dead-letter-{row['seq']}",
                      value=base64.b64decode(row["payload_b64"]))
        done.append(row["seq"])
    producer.flush()
    return done, failing
