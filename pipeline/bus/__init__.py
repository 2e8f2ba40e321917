"""Message buses: `make_bus(settings)` gives Kafka when KAFKA_BOOTSTRAP_SERVERS is set, else the
embedded in-process bus."""

from __future__ import annotations

from pipeline.bus.base import Bus, BusConsumer, BusProducer, Record
from pipeline.settings import Settings

__all__ = ["Bus", "BusConsumer", "BusProducer", "Record", "make_bus"]


def make_bus(settings: Settings) -> Bus:
    if settings.embedded:
        from pipeline.bus.memory import MemoryBus

        return MemoryBus()
    from pipeline.bus.kafka import KafkaBus

    return KafkaBus(settings)
