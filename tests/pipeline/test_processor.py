"""The processor: bad input is dead-lettered with its reason, good input is scored and published,
on the embedded bus and on a real Kafka-protocol broker (tansu)."""

from __future__ import annotations

import json

import pytest

from pipeline.bus.base import Record
from pipeline.bus.kafka import KafkaBus
from pipeline.bus.memory import MemoryBus
from pipeline.contracts import decode_analyzed, decode_dead_letter
from pipeline.engines.vader import VaderEngine
from pipeline.processor import Processor
from tests.pipeline.conftest import BAD_PAYLOADS, raw_payload, wait_for


def records(payloads: list[bytes], topic: str = "raw_tweets") -> list[Record]:
    return [Record(topic, 0, i, f"k{i}".encode(), p) for i, p in enumerate(payloads)]


def test_bad_messages_become_dead_letters_with_reason_and_the_rest_is_scored(make_settings):
    processor = Processor(make_settings(), bus=MemoryBus(), engine=VaderEngine())
    payloads = [raw_payload(1), *(p for p, _ in BAD_PAYLOADS.values()), raw_payload(2, text="awful, hate it")]
    tweets, letters = processor.analyze(records(payloads))

    assert [t.id for t in tweets] == ["t1", "t2"]
    assert tweets[0].label == "positive" and tweets[0].score > 0.05 and tweets[0].engine == "vader"
    assert tweets[1].label == "negative" and tweets[1].score < -0.05
    assert len(letters) == len(BAD_PAYLOADS)
    for letter, (name, (payload, reason)) in zip(letters, BAD_PAYLOADS.items(), strict=True):
        assert reason in letter.reason, name
        assert letter.payload == payload, name  # the original bytes, for replay
        assert letter.stage == "processor" and letter.topic == "raw_tweets"


def test_text_hygiene_is_applied_before_scoring(make_settings):
    processor = Processor(make_settings(), bus=MemoryBus(), engine=VaderEngine())
    payload = json.dumps({"id": "n1", "text": "great\u0000 trip \ud83d", "keyword": "United",
                          "created_at": "2026-01-01T00:00:00Z", "source": "x"}).encode()
    tweets, letters = processor.analyze(records([payload]))
    assert not letters
    assert tweets[0].text == "great trip \ufffd"


class FlakyEngine:
    """Fails any batch holding 'boom', like a model that chokes on one input."""

    name = "flaky"

    def __init__(self) -> None:
        self.inner = VaderEngine()

    def classify(self, texts, *, subjects=None):
        if any("boom" in t for t in texts):
            raise RuntimeError("engine exploded")
        return self.inner.classify(texts, subjects=subjects)


def test_a_text_that_breaks_the_engine_is_isolated(make_settings):
    processor = Processor(make_settings(), bus=MemoryBus(), engine=FlakyEngine())
    batch = records([raw_payload(1), raw_payload(2, text="boom"), raw_payload(3)])
    tweets, letters = processor.analyze(batch)
    assert [t.id for t in tweets] == ["t1", "t3"]
    assert len(letters) == 1 and "classification failed: RuntimeError: engine exploded" in letters[0].reason


def consume_all(settings, topic: str, *, want: int, timeout: float = 60) -> list[Record]:
    """Read `topic` from the start with a fresh group until `want` records arrived."""
    bus = KafkaBus(settings)
    consumer = bus.consumer([topic], group_id=f"check-{topic}")
    got: list[Record] = []
    try:
        wait_for(lambda: got.extend(consumer.poll(max_records=1000, timeout=0.5)) or len(got) >= want,
                 timeout=timeout, what=f"{want} records on {topic}", interval=0)
    finally:
        consumer.close()
    return got


def test_processor_on_kafka_publishes_scores_and_dead_letters(kafka_settings, sqlite_url, in_thread):
    settings = kafka_settings(database_url=sqlite_url)
    bus = KafkaBus(settings)
    bus.ensure_topics([settings.raw_topic])
    producer = bus.producer()
    good = 150
    for i in range(good):
        producer.send(settings.raw_topic, key=f"t{i}", value=raw_payload(i))
        if i % 30 == 0:
            for payload, _ in BAD_PAYLOADS.values():
                producer.send(settings.raw_topic, key="bad", value=payload)
    producer.flush()
    bad = len(BAD_PAYLOADS) * 5

    processor = Processor(settings, engine=VaderEngine())
    in_thread(processor.run)

    analyzed = consume_all(settings, settings.analyzed_topic, want=good)
    tweets = [decode_analyzed(r.value) for r in analyzed]
    assert {t.id for t in tweets} == {f"t{i}" for i in range(good)}
    assert all(r.key == t.id.encode() for r, t in zip(analyzed, tweets, strict=True))  # keyed by id
    assert all(t.label == "positive" and t.engine == "vader" for t in tweets)

    dead = consume_all(settings, settings.dead_letter_topic, want=bad)
    letters = [decode_dead_letter(r.value) for r in dead]
    reasons = [letter.reason for letter in letters]
    for payload, reason in BAD_PAYLOADS.values():
        matching = [letter for letter in letters if letter.payload == payload]
        assert len(matching) == 5 and all(reason in m.reason for m in matching), (reason, reasons)
    # Offsets are committed after the publish, so a second processor in the group has nothing left.
    wait_for(lambda: processor.monitor and processor.monitor.total >= good, timeout=10, what="monitor")


def test_two_processors_in_one_group_split_the_partitions(kafka_settings, sqlite_url, in_thread):
    settings = kafka_settings(database_url=sqlite_url, kafka_partitions=4)
    bus = KafkaBus(settings)
    bus.ensure_topics([settings.raw_topic])
    first, second = Processor(settings, engine=VaderEngine()), Processor(settings, engine=VaderEngine())
    in_thread(first.run)
    in_thread(second.run)
    wait_for(lambda: first.monitor and second.monitor, timeout=30, what="both processors started")
    producer = bus.producer()
    n = 400
    for i in range(n):
        producer.send(settings.raw_topic, key=f"t{i}", value=raw_payload(i))
    producer.flush()
    analyzed = consume_all(settings, settings.analyzed_topic, want=n, timeout=90)
    assert {decode_analyzed(r.value).id for r in analyzed} == {f"t{i}" for i in range(n)}
    wait_for(lambda: first.monitor.total + second.monitor.total >= n, timeout=20, what="counts")
    assert first.monitor.total > 0 and second.monitor.total > 0, (first.monitor.total, second.monitor.total)


@pytest.mark.parametrize("engine_name", ["vader"])
def test_processor_writes_its_heartbeat(engine_name, make_settings, sqlite_url, in_thread):
    from db.database import open_database
    from db.queries import heartbeats

    settings = make_settings(database_url=sqlite_url, sentiment_engine=engine_name)
    db = open_database(settings)
    bus = MemoryBus()
    processor = Processor(settings, bus=bus, db=db)
    in_thread(processor.run)
    bus.producer().send(settings.raw_topic, key="t1", value=raw_payload(1))
    beats = wait_for(lambda: [h for h in heartbeats(db) if h.stage == "processor" and h.details.get("total")],
                     timeout=10, what="a processor heartbeat with a count")
    assert beats[0].engine == "vader" and beats[0].lag == 0
