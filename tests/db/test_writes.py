"""write_tweets and the small-table writes, on SQLite and real PostgreSQL."""

from __future__ import annotations

import select
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from db import queries, schema, writes
from db.database import SQLITE_IMMEDIATE, open_database
from pipeline.contracts import AnalyzedTweet, DeadLetter
from tests.db.conftest import make_tweet

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def aggregate_rows(db) -> dict[tuple[datetime, str], tuple]:
    S = schema.sentiment_1m
    with db.engine.connect() as conn:
        rows = conn.execute(sa.select(S)).all()
    return {
        (r.bucket, r.keyword): (r.n, r.n_neg, r.n_neu, r.n_pos, round(r.sum_score, 9), round(r.avg_score, 9))
        for r in rows
    }


def expected_from_raw(db) -> dict[tuple[datetime, str], tuple]:
    """The 1-minute aggregate recomputed in Python from every stored raw row."""
    T = schema.tweets
    acc: dict[tuple[datetime, str], list] = defaultdict(lambda: [0, 0, 0, 0, 0.0])
    with db.engine.connect() as conn:
        for r in conn.execute(sa.select(T.c.created_at, T.c.keyword, T.c.label, T.c.score)):
            a = acc[(r.created_at.replace(second=0, microsecond=0), r.keyword)]
            a[0] += 1
            a[1 + ("negative", "neutral", "positive").index(r.label)] += 1
            a[4] += r.score
    return {k: (a[0], a[1], a[2], a[3], round(a[4], 9), round(a[4] / a[0], 9)) for k, a in acc.items()}


def count_tweets(db) -> int:
    with db.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(schema.tweets)).scalar()


def test_write_is_idempotent_and_counts_only_new_rows(database):
    batch = [
        make_tweet(id="1", created_at=T0, label="negative", score=-0.6),
        make_tweet(id="2", created_at=T0 + timedelta(seconds=5), label="positive", score=0.4),
        make_tweet(id="3", created_at=T0 + timedelta(minutes=1), label="neutral", score=0.0),
    ]
    assert writes.write_tweets(database, batch) == 3
    assert writes.write_tweets(database, batch) == 0
    # A batch mixing one old and one new row counts only the new one.
    assert writes.write_tweets(database, [batch[0], make_tweet(id="4", created_at=T0, score=0.2)]) == 1
    assert count_tweets(database) == 4
    agg = aggregate_rows(database)
    assert agg[(T0, "Tesla")][:4] == (3, 1, 1, 1)
    assert agg[(T0, "Tesla")][4] == pytest.approx(0.0)
    assert agg == expected_from_raw(database)


def test_duplicates_inside_one_batch_are_stored_and_counted_once(database):
    t = make_tweet(id="dup", created_at=T0, label="negative", score=-1.0)
    assert writes.write_tweets(database, [t, t, t.model_copy(update={"text": "changed"})]) == 1
    assert count_tweets(database) == 1
    assert aggregate_rows(database)[(T0, "Tesla")][:5] == (1, 1, 0, 0, -1.0)
    stored = queries.latest_tweets(database).data[0]
    assert stored.text == "a tweet"  # the first copy wins


def test_same_id_under_two_keywords_is_two_rows(database):
    a = make_tweet(id="x1", keyword="Tesla", created_at=T0)
    b = make_tweet(id="x1", keyword="Apple", created_at=T0)
    assert writes.write_tweets(database, [a, b]) == 2
    assert set(k for _, k in aggregate_rows(database)) == {"Tesla", "Apple"}


def test_failed_batch_stores_nothing(database):
    good = make_tweet(id="ok", created_at=T0)
    # Bypass validation to get a row the database itself rejects (label CHECK constraint).
    fields = make_tweet(id="bad", created_at=T0).model_dump()
    bad = AnalyzedTweet.model_construct(**{**fields, "label": "angry"})
    with pytest.raises((sa.exc.DBAPIError, psycopg2.Error)):
        writes.write_tweets(database, [good, bad])
    assert count_tweets(database) == 0
    assert aggregate_rows(database) == {}
    assert writes.write_tweets(database, [good]) == 1  # the connection is usable afterwards


def test_offset_input_lands_in_the_utc_bucket(database):
    local = datetime.fromisoformat("2015-02-24T11:35:52-08:00")
    writes.write_tweets(
        database,
        [make_tweet(id="570306133677760513", keyword="Virgin America", created_at=local, label="neutral")],
    )
    utc_minute = datetime(2015, 2, 24, 19, 35, tzinfo=UTC)
    assert (utc_minute, "Virgin America") in aggregate_rows(database)
    row = queries.latest_tweets(database).data[0]
    assert row.created_at == local
    assert row.created_at.tzinfo is not None and row.created_at.utcoffset() == timedelta(0)
    assert row.created_at.isoformat() == "2015-02-24T19:35:52+00:00"
    assert row.ingested_at.tzinfo is not None
    series = queries.trend(
        database,
        keywords=["virgin america"],
        since=utc_minute - timedelta(minutes=1),
        until=utc_minute + timedelta(minutes=2),
        bucket="1m",
    ).series["virgin america"]
    assert [p.n for p in series] == [0, 1, 0]
    assert series[1].bucket.isoformat() == "2015-02-24T19:35:00+00:00"


@pytest.mark.parametrize(
    "text,stored",
    [
        ("nul\x00byte", "nulbyte"),
        ("lone \ud83d surrogate", "lone \ufffd surrogate"),
        ("emoji 🚀🔥 and ZWJ 👩‍👩‍👧", "emoji 🚀🔥 and ZWJ 👩‍👩‍👧"),
        ("x" * 10_000, "x" * 10_000),
        ("tab\tnew\nline\r\\back", "tab\tnew\nline\r\\back"),
    ],
)
def test_hostile_text_is_stored_in_the_documented_way(database, text, stored):
    assert writes.write_tweets(database, [make_tweet(id="t", text=text, created_at=T0)]) == 1
    assert queries.latest_tweets(database).data[0].text == stored


def test_nul_in_other_fields_does_not_break_the_batch(database):
    # The contract may reject NULs up front; the writer must still clean what reaches it (e.g. rows
    # from an older producer), so build the tweet without validation.
    dirty = {"id": "a\x00b", "keyword": "Te\x00sla", "lang": "e\x00n"}
    t = make_tweet(created_at=T0).model_copy(update=dirty)
    assert writes.write_tweets(database, [t, make_tweet(id="ab", created_at=T0)]) == 1  # same key once clean
    row = queries.latest_tweets(database).data[0]
    assert (row.id, row.keyword) == ("ab", "Tesla")


def test_seq_increases_in_write_order(database):
    writes.write_tweets(database, [make_tweet(created_at=T0 + timedelta(minutes=5))])
    first = queries.max_seq(database)
    writes.write_tweets(database, [make_tweet(created_at=T0), make_tweet(created_at=T0)])
    tail = queries.tweets_after(database, after_seq=first)
    assert len(tail) == 2 and all(r.seq > first for r in tail)
    assert [r.seq for r in tail] == sorted(r.seq for r in tail)
    assert queries.max_seq(database) == tail[-1].seq
    assert queries.tweets_after(database, after_seq=queries.max_seq(database)) == []


def test_postgres_notifies_after_commit(pg_database):
    url = make_url(pg_database.engine.url.render_as_string(hide_password=False))
    listener = psycopg2.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, dbname=url.database
    )
    try:
        listener.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        listener.cursor().execute(f"LISTEN {schema.NOTIFY_CHANNEL}")
        writes.write_tweets(pg_database, [make_tweet(created_at=T0), make_tweet(created_at=T0)])
        assert select.select([listener], [], [], 5) != ([], [], [])
        listener.poll()
        payloads = [n.payload for n in listener.notifies]
        assert payloads == [str(queries.max_seq(pg_database))]
        # Nothing new: no notification.
        listener.notifies.clear()
        writes.write_tweets(
            pg_database, [make_tweet(id=queries.latest_tweets(pg_database).data[0].id, created_at=T0)]
        )
        assert select.select([listener], [], [], 0.3) == ([], [], [])
    finally:
        listener.close()


def test_sqlite_readers_read_while_a_write_transaction_is_open(sqlite_database, make_settings):
    writes.write_tweets(sqlite_database, [make_tweet(created_at=T0)])
    reader = open_database(make_settings(database_url=str(sqlite_database.engine.url)), init=False)
    try:
        with sqlite_database.engine.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            assert mode == "wal"
        holding, release = threading.Event(), threading.Event()

        def hold_write_lock():
            with sqlite_database.engine.connect() as conn:
                conn.info[SQLITE_IMMEDIATE] = True
                tx = conn.begin()
                conn.exec_driver_sql("UPDATE tweets SET lang = 'xx'")
                holding.set()
                release.wait(10)
                tx.rollback()

        worker = threading.Thread(target=hold_write_lock)
        worker.start()
        try:
            assert holding.wait(10)
            page = queries.latest_tweets(reader)  # would raise 'database is locked' without WAL
            assert len(page.data) == 1 and page.data[0].lang == "en"
        finally:
            release.set()
            worker.join(10)
    finally:
        reader.close()


def test_heartbeat_upserts(database):
    writes.beat(
        database,
        stage="ingestor",
        instance="host:1",
        engine="vader",
        rate=10.5,
        lag=3,
        details={"partitions": [0, 1]},
    )
    writes.beat(database, stage="ingestor", instance="host:1", engine="vader", rate=12.0, lag=0)
    writes.beat(database, stage="processor", instance="host:2")
    beats = queries.heartbeats(database)
    assert [(b.stage, b.instance) for b in beats] == [("ingestor", "host:1"), ("processor", "host:2")]
    assert beats[0].rate == 12.0 and beats[0].lag == 0 and beats[0].details == {}
    assert beats[0].last_seen.tzinfo is not None
    assert datetime.now(UTC) - beats[0].last_seen < timedelta(minutes=1)


def test_state_roundtrip(database):
    assert writes.get_state(database, "x:since_id:Tesla") is None
    writes.set_state(database, "x:since_id:Tesla", "100")
    writes.set_state(database, "x:since_id:Tesla", "200")
    assert writes.get_state(database, "x:since_id:Tesla") == "200"


def test_keywords_are_case_insensitively_unique(database):
    writes.add_keyword(database, "tesla")  # seeded as "Tesla": no-op
    writes.add_keyword(database, "  Rivian ")
    writes.add_keyword(database, "RIVIAN")
    tracked = [k.keyword for k in queries.keywords(database) if k.tracked]
    assert tracked == ["Tesla", "United", "Apple", "Rivian"]
    with pytest.raises(ValueError):
        writes.add_keyword(database, "   ")
    with pytest.raises(ValueError):
        writes.add_keyword(database, "k" * 201)


def test_dead_letters_roundtrip(database):
    letter = DeadLetter.of(
        stage="processor",
        reason="text is empty",
        payload=b'{"text": ""}',
        topic="raw_tweets",
        partition=2,
        offset=41,
        key="123",
    )
    other = DeadLetter.of(stage="ingestor", reason="r", payload=b"\x00")
    writes.write_dead_letters(database, [letter, other])
    rows = queries.dead_letters(database)
    assert [r["stage"] for r in rows] == ["ingestor", "processor"]  # newest first
    assert rows[1]["offset"] == 41 and rows[1]["payload_b64"] == letter.payload_b64
    assert rows[1]["failed_at"].tzinfo is not None
    assert len(queries.dead_letters(database, limit=1)) == 1


def test_postgres_writer_survives_a_server_restart(throwaway_pg, make_settings):
    db = open_database(make_settings(database_url=throwaway_pg.url))
    try:
        assert writes.write_tweets(db, [make_tweet(created_at=T0)]) == 1
        assert db.writer_connection is not None  # kept for the next batch
        throwaway_pg.down()
        with pytest.raises(sa.exc.DBAPIError):
            queries.max_seq(db)
        with pytest.raises(psycopg2.Error):
            writes.write_tweets(db, [make_tweet(created_at=T0)])  # down: fails, loses nothing
        throwaway_pg.up()
        assert writes.write_tweets(db, [make_tweet(created_at=T0)]) == 1
        # The kept connection died idle this time: retried once on a fresh connection.
        throwaway_pg.down()
        throwaway_pg.up()
        assert writes.write_tweets(db, [make_tweet(created_at=T0)]) == 1
        assert count_tweets(db) == 3
    finally:
        db.close()
