"""The embedded in-process bus: one append-only log per topic, consumer groups with offsets.

It gives the stages the same at-least-once contract as Kafka inside one process, with
back-pressure: a producer blocks while a topic holds more than `max_backlog` unconsumed records,
so a fast replay cannot fill memory. Records are dropped once every group has committed them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from pipeline.bus.base import Record


class _Topic:
    def __init__(self, name: str) -> None:
        self.name = name
        self.base = 0  # offset of records[0]
        self.records: list[tuple[bytes | None, bytes]] = []
        self.committed: dict[str, int] = {}  # group -> next offset to consume

    @property
    def end(self) -> int:
        return self.base + len(self.records)

    def trim(self) -> None:
        if not self.committed:
            return
        low = min(self.committed.values())
        if low - self.base > 1024:
            del self.records[: low - self.base]
            self.base = low

    def backlog(self) -> int:
        low = min(self.committed.values()) if self.committed else self.base
        return self.end - low


class MemoryBus:
    def __init__(self, *, max_backlog: int = 50_000) -> None:
        self._topics: dict[str, _Topic] = {}
        self._cond = threading.Condition()
        self._max_backlog = max_backlog
        self._closed = False

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic(name)
        return topic

    def ensure_topics(self, topics: Iterable[str]) -> None:
        with self._cond:
            for name in topics:
                self._topic(name)

    def producer(self) -> MemoryProducer:
        return MemoryProducer(self)

    def consumer(self, topics: list[str], *, group_id: str) -> MemoryConsumer:
        with self._cond:
            for name in topics:
                t = self._topic(name)
                t.committed.setdefault(group_id, t.base)
        return MemoryConsumer(self, topics, group_id)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # --- used by the clients ---------------------------------------------------------------
    def _append(self, topic: str, key: bytes | None, value: bytes) -> None:
        with self._cond:
            t = self._topic(topic)
            while t.committed and t.backlog() >= self._max_backlog and not self._closed:
                self._cond.wait(0.5)
            t.records.append((key, value))
            self._cond.notify_all()

    def _read(self, topics: list[str], positions: dict[str, int], max_records: int,
              timeout: float) -> list[Record]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                out: list[Record] = []
                for name in topics:
                    t = self._topics[name]
                    pos = max(positions[name], t.base)
                    while pos < t.end and len(out) < max_records:
                        key, value = t.records[pos - t.base]
                        out.append(Record(name, 0, pos, key, value))
                        pos += 1
                    positions[name] = pos
                if out or self._closed:
                    return out
                left = deadline - time.monotonic()
                if left <= 0:
                    return out
                self._cond.wait(left)

    def _commit(self, group: str, positions: dict[str, int]) -> None:
        with self._cond:
            for name, pos in positions.items():
                t = self._topics[name]
                t.committed[group] = max(t.committed.get(group, 0), pos)
                t.trim()
            self._cond.notify_all()

    def _committed(self, topic: str, group: str) -> int:
        with self._cond:
            return self._topics[topic].committed.get(group, 0)

    def lag(self, topic: str, group: str) -> int:
        """Records in `topic` that `group` has not committed yet."""
        with self._cond:
            t = self._topics.get(topic)
            return 0 if t is None else t.end - t.committed.get(group, t.base)


class MemoryProducer:
    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus

    def send(self, topic: str, *, key: str, value: bytes) -> None:
        self._bus._append(topic, key.encode("utf-8"), value)

    def flush(self, timeout: float | None = None) -> None:
        """Appends are synchronous, so everything sent is already 'acknowledged'."""

    def close(self) -> None:
        pass


class MemoryConsumer:
    def __init__(self, bus: MemoryBus, topics: list[str], group_id: str) -> None:
        self._bus = bus
        self._group = group_id
        self._positions = {t: bus._committed(t, group_id) for t in topics}
        self._topics = topics

    def poll(self, *, max_records: int, timeout: float) -> list[Record]:
        return self._bus._read(self._topics, self._positions, max_records, timeout)

    def commit(self) -> None:
        self._bus._commit(self._group, dict(self._positions))

    def close(self) -> None:
        pass
