"""The message-bus interface the stages use: Kafka in production, an in-process bus embedded.

Delivery is at-least-once: a consumer's `commit()` marks everything it has returned from `poll()`
as done, so a stage commits only after its sink (the next topic, or the DB) has taken the batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    def where(self) -> str:
        """`topic[partition] offset`, for log lines."""
        return f"{self.topic}[{self.partition}] {self.offset}"


class BusProducer(Protocol):
    def send(self, topic: str, *, key: str, value: bytes) -> None:
        """Queue a message; `flush()` waits until every queued message is acknowledged."""

    def flush(self, timeout: float | None = None) -> None:
        """Block until all sent messages are acknowledged (acks=all); raise if any failed."""

    def close(self) -> None: ...


class BusConsumer(Protocol):
    def poll(self, *, max_records: int, timeout: float) -> list[Record]:
        """Up to `max_records` records, waiting at most `timeout` seconds for the first."""

    def commit(self) -> None:
        """Commit the offsets of every record returned so far."""

    def close(self) -> None: ...


class Bus(Protocol):
    def ensure_topics(self, topics: Iterable[str]) -> None:
        """Create the topics that do not exist yet (partitions from settings)."""

    def producer(self) -> BusProducer: ...

    def consumer(self, topics: list[str], *, group_id: str) -> BusConsumer: ...

    def close(self) -> None: ...
