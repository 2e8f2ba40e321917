"""Dead letters: where messages that cannot be processed go, with the reason and the original bytes.

On Kafka the processor sends them to the dead-letter topic and the ingestor copies that topic into
the `dead_letters` table; on the embedded bus the stages write the table directly. Either way
`python -m pipeline dead-letters list|replay` works from the table.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from pipeline.bus.base import BusProducer, Record
from pipeline.contracts import DeadLetter, encode

if TYPE_CHECKING:
    from db.database import Database

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
