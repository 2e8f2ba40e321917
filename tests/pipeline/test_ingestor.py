"""The ingestor: batches into real PostgreSQL over a real broker, redelivery without duplicates,
dead letters, and a database that is down at start or goes down mid-stream."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import sqlalchemy as sa

from pipeline.bus.kafka import KafkaBus
from pipeline.bus.memory import MemoryBus
from pipeline.contracts import AnalyzedTweet, DeadLetter, encode
from pipeline.ingestor import Ingestor
from tests.pipeline.conftest import count_rows, wait_for


def analyzed(i: int, **over) -> AnalyzedTweet:
    data = dict(id=f"a{i}", text=f"tweet {i}", created_at=datetime(2026, 1, 1, 12, i % 60, tzinfo=UTC),
                keyword=["United", "JetBlue"][i % 2], source="replay", gold_label="negative",
                label="negative",
                p_neg=0.6, p_neu=0.3, p_pos=0.1, score=-0.5, engine="vader",
                processed_at=datetime.now(UTC))
    data.update(over)
    return AnalyzedTweet(**data)


def test_ingestor_on_kafka_and_postgres_stores_each_tweet_once(kafka_settings, pg_url, in_thread):
    settings = kafka_settings(database_url=pg_url, ingest_batch_size=100)
    bus = KafkaBus(settings)
    bus.ensure_topics([settings.analyzed_topic, settings.dead_letter_topic])
    producer = bus.producer()
    n = 500
    for i in range(n):
        producer.send(settings.analyzed_topic, key=f"a{i}", value=encode(analyzed(i)))
    for i in range(0, n, 5):  # redelivered copies (a processor restarted before its commit)
        producer.send(settings.analyzed_topic, key=f"a{i}", value=encode(analyzed(i)))
    producer.send(settings.analyzed_topic, key="bad1", value=b"\xff not json")
    producer.send(settings.analyzed_topic, key="bad2", value=b'{"id": "x", "label": "furious"}')
    letter = DeadLetter.of(stage="processor", reason="text is empty", payload=b'{"text": ""}',
                           topic=settings.raw_topic, partition=1, offset=7, key="e1")
    producer.send(settings.dead_letter_topic, key="e1", value=encode(letter))
    producer.flush()

    ingestor = Ingestor(settings)
    in_thread(ingestor.run)
    wait_for(lambda: count_rows(pg_url) >= n and count_rows(pg_url, "select count(*) from dead_letters") >= 3,
             timeout=60, what="all rows and dead letters")
    wait_for(lambda: ingestor.monitor.total >= n + n // 5, timeout=20, what="everything consumed")

    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*), count(distinct id) from tweets")).one() == (n, n)
        sql = "select keyword, label, gold_label, engine from tweets where id='a3'"
        row = conn.execute(sa.text(sql)).one()
        assert tuple(row) == ("JetBlue", "negative", "negative", "vader")
        letters = conn.execute(sa.text("select stage, reason, key from dead_letters order by seq")).all()
        # Aggregates count each tweet once even though some were delivered twice.
        assert conn.execute(sa.text("select sum(n) from sentiment_1m")).scalar() == n
    engine.dispose()
    by_key = {key: (stage, reason) for stage, reason, key in letters}
    assert by_key["e1"] == ("processor", "text is empty")  # copied from the dead-letter topic
    assert by_key["bad1"][0] == "ingestor" and "not UTF-8" in by_key["bad1"][1]
    assert by_key["bad2"][0] == "ingestor" and "label" in by_key["bad2"][1]


def test_database_down_at_start_and_mid_stream_retries_then_resumes(make_settings, throwaway_pg, in_thread,
                                                                      caplog):
    caplog.set_level(logging.INFO)
    settings = make_settings(database_url=throwaway_pg.url, retry_initial_backoff_seconds=0.2,
                             retry_max_backoff_seconds=0.5)
    throwaway_pg.down()
    bus = MemoryBus()
    ingestor = Ingestor(settings, bus=bus)
    in_thread(ingestor.run)
    wait_for(lambda: "failed (attempt 2)" in caplog.text, timeout=60, what="two logged connection attempts")
    assert "connect to database postgresql+psycopg2://postgres@127.0.0.1" in caplog.text
    producer = bus.producer()
    for i in range(50):
        producer.send(settings.analyzed_topic, key=f"a{i}", value=encode(analyzed(i)))
    throwaway_pg.up()
    wait_for(lambda: count_rows(throwaway_pg.url) == 50, timeout=60, what="the first 50 rows")

    caplog.clear()
    throwaway_pg.down()
    for i in range(50, 120):
        producer.send(settings.analyzed_topic, key=f"a{i}", value=encode(analyzed(i)))
    wait_for(lambda: "ingestor: write 70 tweets" in caplog.text and "failed (attempt 2)" in caplog.text,
             timeout=60, what="the batch retried while the DB is down")
    assert bus.lag(settings.analyzed_topic, settings.ingestor_group_id) == 70  # nothing committed
    throwaway_pg.up()
    wait_for(lambda: count_rows(throwaway_pg.url) == 120, timeout=60, what="all 120 rows after the outage")
    wait_for(lambda: bus.lag(settings.analyzed_topic, settings.ingestor_group_id) == 0, timeout=10,
             what="offsets committed after the write")


def test_a_row_the_database_rejects_is_dead_lettered_alone(make_settings, sqlite_url, in_thread, monkeypatch):
    import db.writes

    real = db.writes.write_tweets

    def picky(database, tweets):
        if any(t.id == "a7" for t in tweets):
            raise sa.exc.IntegrityError("INSERT ...", {}, Exception("value violates a check constraint"))
        return real(database, tweets)

    monkeypatch.setattr(db.writes, "write_tweets", picky)
    settings = make_settings(database_url=sqlite_url)
    bus = MemoryBus()
    ingestor = Ingestor(settings, bus=bus)
    in_thread(ingestor.run)
    producer = bus.producer()
    for i in range(20):
        producer.send(settings.analyzed_topic, key=f"a{i}", value=encode(analyzed(i)))
    wait_for(lambda: count_rows(sqlite_url) == 19, timeout=30, what="the 19 good rows")
    reason = wait_for(lambda: count_rows(sqlite_url, "select reason from dead_letters where key='a7'"),
                      timeout=10, what="a7 dead-lettered")
    assert "database rejected the row" in reason
