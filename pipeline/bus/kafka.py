"""The Kafka bus (kafka-python): acks=all producers, manual-commit consumer groups, idempotent
topic creation. Every client error is raised as BusError; the stages retry with backoff.

Defaults are right for Apache Kafka (session timeout 45 s); tests shorten them through settings.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import CommitFailedError, KafkaError, TopicAlreadyExistsError
from kafka.serializer import Serializer

from pipeline.bus.base import Record
from pipeline.errors import BusError
from pipeline.settings import Settings

logger = logging.getLogger(__name__)


class _KeySerializer(Serializer):
    """Tweet ids (str) as UTF-8 bytes."""

    def serialize(self, topic: str, headers: list, data: str | bytes | None) -> bytes | None:
        if data is None or isinstance(data, bytes):
            return data
        return data.encode("utf-8")


class KafkaBus:
    def __init__(self, settings: Settings) -> None:
        if not settings.kafka_bootstrap_servers:
            raise BusError("KAFKA_BOOTSTRAP_SERVERS is not set")
        self.settings = settings
        self.servers = [s.strip() for s in settings.kafka_bootstrap_servers.split(",") if s.strip()]

    def _common(self, role: str) -> dict:
        return {
            "bootstrap_servers": self.servers,
            "client_id": f"{self.settings.kafka_client_id}-{role}",
            "request_timeout_ms": self.settings.kafka_request_timeout_ms,
            # Give up on an unreachable broker quickly: the stages retry with backoff and say so,
            # and a stop request (SIGINT/SIGTERM) waits at most this long for the attempt in flight.
            "bootstrap_timeout_ms": min(5_000, self.settings.kafka_request_timeout_ms),
        }

    def ensure_topics(self, topics: Iterable[str]) -> None:
        """Create the topics that do not exist yet; a topic created meanwhile is fine."""
        wanted = list(dict.fromkeys(topics))
        try:
            admin = KafkaAdminClient(**self._common("admin"))
        except KafkaError as exc:
            raise BusError(f"cannot reach Kafka at {','.join(self.servers)}: {exc}") from exc
        try:
            existing = set(admin.list_topics())
            missing = [t for t in wanted if t not in existing]
            for name in missing:
                try:
                    admin.create_topics([NewTopic(name, self.settings.kafka_partitions,
                                                  self.settings.kafka_replication_factor)])
                    logger.info("created topic %s (%d partitions)", name, self.settings.kafka_partitions)
                except TopicAlreadyExistsError:
                    pass  # another stage created it between list and create
        except KafkaError as exc:
            raise BusError(f"cannot create topics {wanted}: {exc}") from exc
        finally:
            admin.close()

    def producer(self) -> KafkaBusProducer:
        s = self.settings
        try:
            client = KafkaProducer(
                **self._common("producer"),
                acks="all",
                retries=2**31 - 1,  # bounded by delivery_timeout_ms instead
                # On by default, as on Apache Kafka. Against tansu the tests turn it off: after a
                # kill -9 tansu answered a retried batch DUPLICATE_SEQUENCE_NUMBER without having
                # stored it, and the idempotent producer took that as success (docs/faults.md).
                # Off, retries are plain at-least-once; the ingestor's idempotent writes drop repeats.
                enable_idempotence=s.kafka_enable_idempotence,
                delivery_timeout_ms=max(120_000, s.kafka_request_timeout_ms + 5_000),
                linger_ms=5,
                batch_size=256 * 1024,
                max_block_ms=max(10_000, s.kafka_request_timeout_ms),
                key_serializer=_KeySerializer(),
            )
        except KafkaError as exc:
            raise BusError(f"cannot reach Kafka at {','.join(self.servers)}: {exc}") from exc
        return KafkaBusProducer(client)

    def consumer(self, topics: list[str], *, group_id: str) -> KafkaBusConsumer:
        s = self.settings
        try:
            client = KafkaConsumer(
                *topics,
                **self._common(f"consumer-{group_id}"),
                group_id=group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=s.kafka_session_timeout_ms,
                heartbeat_interval_ms=min(s.kafka_heartbeat_interval_ms, s.kafka_session_timeout_ms // 3),
                max_poll_interval_ms=max(300_000, s.kafka_session_timeout_ms),
                fetch_max_wait_ms=100,
            )
        except KafkaError as exc:
            raise BusError(f"cannot reach Kafka at {','.join(self.servers)}: {exc}") from exc
        return KafkaBusConsumer(client, group_id)

    def close(self) -> None:
        pass


class KafkaBusProducer:
    def __init__(self, client: KafkaProducer) -> None:
        self._client = client
        self._pending: list = []

    def send(self, topic: str, *, key: str, value: bytes) -> None:
        try:
            self._pending.append(self._client.send(topic, key=key, value=value))
        except KafkaError as exc:
            raise BusError(f"send to {topic} failed: {exc}") from exc

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every sent message's acks=all acknowledgement; raise BusError if one failed."""
        pending, self._pending = self._pending, []
        try:
            self._client.flush(timeout=timeout)
        except KafkaError as exc:
            raise BusError(f"flush failed: {exc}") from exc
        failed = [f for f in pending if not f.is_done or f.failed()]
        if failed:
            first = failed[0]
            reason = first.exception if first.is_done else "not acknowledged in time"
            raise BusError(f"{len(failed)} of {len(pending)} messages not acknowledged: {reason}")

    def close(self) -> None:
        try:
            self._client.close(timeout=5)
        except KafkaError as exc:
            logger.warning("producer close: %s", exc)


class KafkaBusConsumer:
    def __init__(self, client: KafkaConsumer, group_id: str) -> None:
        self._client = client
        self.group_id = group_id

    def poll(self, *, max_records: int, timeout: float) -> list[Record]:
        try:
            polled = self._client.poll(timeout_ms=int(timeout * 1000), max_records=max_records)
        except KafkaError as exc:
            raise BusError(f"poll failed: {exc}") from exc
        out: list[Record] = []
        for tp, records in polled.items():
            for r in records:
                out.append(Record(tp.topic, tp.partition, r.offset, r.key, r.value))
        return out

    def commit(self) -> None:
        """Commit what poll() returned. After a rebalance the commit is refused: the records go to
        the partitions' new owner and are processed again (downstream writes are idempotent)."""
        try:
            self._client.commit()
        except CommitFailedError as exc:
            logger.warning("offset commit refused after a rebalance (records will be redelivered): %s", exc)
        except KafkaError as exc:
            raise BusError(f"offset commit failed: {exc}") from exc

    def lag(self) -> int | None:
        """Records not yet consumed, where the client knows the end offsets (else None)."""
        try:
            total = 0
            for tp in self._client.assignment():
                end = self._client.highwater(tp)
                pos = self._client.position(tp, timeout_ms=0) if end is not None else None
                if end is None or pos is None:
                    return None
                total += max(0, end - pos)
            return total
        except Exception:  # noqa: BLE001 - lag is informational only
            return None

    def close(self) -> None:
        try:
            self._client.close(autocommit=False)
        except KafkaError as exc:
            logger.warning("consumer close: %s", exc)
