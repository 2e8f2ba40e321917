"""TimescaleDB mode. The DDL is unit-tested here; the live tests need TEST_TIMESCALE_URL (a server
with the timescaledb extension; each test creates and drops its own database on it)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from db import queries, schema, writes
from db.database import open_database
from pipeline.errors import ConfigError
from tests.db.conftest import make_tweet
from tests.fixtures.postgres import create_database, drop_database


def test_hypertable_ddl_uses_the_chunk_interval(make_settings):
    ddl = schema.timescale_hypertable_ddl(make_settings(timescale_chunk_interval="6 hours"))
    assert ddl[0] == "CREATE EXTENSION IF NOT EXISTS timescaledb"
    assert ddl[1].startswith("SELECT create_hypertable('tweets', 'created_at', ")
    assert "chunk_time_interval => INTERVAL '6 hours'" in ddl[1]
    assert "if_not_exists => TRUE" in ddl[1]


def test_continuous_aggregate_is_real_time_and_count_based():
    cagg = " ".join(schema.SENTIMENT_1M_CAGG.split())
    assert cagg.startswith(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS sentiment_1m WITH (timescaledb.continuous, "
        "timescaledb.materialized_only = false) AS"
    )
    assert "time_bucket(INTERVAL '1 minute', created_at) AS bucket" in cagg
    assert "GROUP BY time_bucket(INTERVAL '1 minute', created_at), keyword" in cagg
    for column in (
        "count(*) AS n",
        "AS n_neg",
        "AS n_neu",
        "AS n_pos",
        "sum(score) AS sum_score",
        "avg(score) AS avg_score",
    ):
        assert column in cagg
    assert cagg.endswith("WITH NO DATA")


def test_policy_ddl_from_settings(make_settings):
    settings = make_settings(
        timescale_refresh_start_offset="2 hours",
        timescale_refresh_end_offset="1 minute",
        timescale_refresh_schedule="30 seconds",
        timescale_compress_after="3 days",
        timescale_retention="90 days",
    )
    ddl = schema.timescale_policy_ddl(settings, compression_enabled=False)
    assert "ALTER MATERIALIZED VIEW sentiment_1m SET (timescaledb.materialized_only = false)" in ddl
    assert (
        "SELECT add_continuous_aggregate_policy('sentiment_1m', start_offset => INTERVAL '2 hours', "
        "end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '30 seconds', "
        "if_not_exists => TRUE)"
    ) in ddl
    assert (
        "ALTER TABLE tweets SET (timescaledb.compress, timescaledb.compress_segmentby = 'keyword', "
        "timescaledb.compress_orderby = 'created_at DESC, seq DESC')"
    ) in ddl
    assert (
        "SELECT add_compression_policy('tweets', compress_after => INTERVAL '3 days', if_not_exists => TRUE)"
        in ddl
    )
    assert (
        "SELECT add_retention_policy('tweets', drop_after => INTERVAL '90 days', if_not_exists => TRUE)"
        in ddl
    )
    # Compression already on: not re-altered (that fails once chunks are compressed).
    again = schema.timescale_policy_ddl(settings, compression_enabled=True)
    assert not any(s.startswith("ALTER TABLE tweets") for s in again)


def test_policy_ddl_defaults_keep_raw_tweets(make_settings):
    ddl = schema.timescale_policy_ddl(make_settings(), compression_enabled=False)
    assert "SELECT remove_retention_policy('tweets', if_exists => TRUE)" in ddl
    assert not any("add_retention_policy" in s for s in ddl)
    off = schema.timescale_policy_ddl(make_settings(timescale_compress_after=""), compression_enabled=False)
    assert "SELECT remove_compression_policy('tweets', if_exists => TRUE)" in off


@pytest.mark.parametrize("bad", ["1 day'; DROP TABLE tweets; --", "soon", "", "5 parsecs"])
def test_interval_settings_are_validated(make_settings, bad):
    with pytest.raises(ConfigError):
        schema.timescale_hypertable_ddl(make_settings(timescale_chunk_interval=bad))


def test_merge_ranges_groups_nearby_minutes():
    t = datetime(2026, 1, 1, tzinfo=UTC)
    minutes = [t, t + timedelta(minutes=1), t + timedelta(minutes=30), t + timedelta(days=1)]
    ranges = writes._merge_ranges(minutes, gap=timedelta(hours=1), max_ranges=20)
    assert ranges == [
        (t, t + timedelta(minutes=31)),
        (t + timedelta(days=1), t + timedelta(days=1, minutes=1)),
    ]
    assert writes._merge_ranges(minutes, gap=timedelta(minutes=1), max_ranges=2) == [
        (t, t + timedelta(days=1, minutes=1))
    ]


# --- live: TEST_TIMESCALE_URL ---------------------------------------------------------------------


@pytest.fixture
def timescale_db(make_settings):
    server = os.environ.get("TEST_TIMESCALE_URL")
    if not server:
        pytest.skip(
            "TEST_TIMESCALE_URL not set: no TimescaleDB server to run the hypertable/aggregate tests on"
        )
    url = create_database(server)
    db = open_database(make_settings(database_url=url, timescale_refresh_start_offset="3 hours"))
    try:
        yield db
    finally:
        db.close()
        drop_database(server, url)


def test_timescale_mode_objects(timescale_db):
    assert timescale_db.mode == "timescaledb"
    with timescale_db.engine.connect() as conn:
        hyper = conn.execute(
            sa.text(
                "SELECT compression_enabled FROM timescaledb_information.hypertables "
                "WHERE hypertable_name = 'tweets'"
            )
        ).scalar()
        assert hyper is True
        cagg = conn.execute(
            sa.text(
                "SELECT materialized_only FROM timescaledb_information.continuous_aggregates "
                "WHERE view_name = 'sentiment_1m'"
            )
        ).scalar()
        assert cagg is False
        jobs = set(conn.execute(sa.text("SELECT proc_name FROM timescaledb_information.jobs")).scalars())
        assert {"policy_refresh_continuous_aggregate", "policy_compression"} <= jobs
    schema.init_schema(timescale_db)  # idempotent


def test_timescale_recent_and_replayed_data_reach_the_aggregate(timescale_db):
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    old = datetime(2015, 2, 24, 19, 35, tzinfo=UTC)  # far outside the refresh policy window
    batch = [
        make_tweet(created_at=now, label="negative", score=-0.5),
        make_tweet(created_at=now, label="positive", score=0.5),
        make_tweet(created_at=old, label="negative", score=-1.0),
        make_tweet(created_at=old + timedelta(seconds=3), label="neutral", score=0.0),
    ]
    assert writes.write_tweets(timescale_db, batch) == 4
    assert writes.write_tweets(timescale_db, batch) == 0
    # Real-time aggregation shows the current minute; the post-commit refresh materialised the old one.
    current = queries.minute_aggregate(timescale_db, keywords=["Tesla"], at=now)
    assert [(r["n"], r["n_neg"], r["n_pos"]) for r in current] == [(2, 1, 1)]
    replayed = queries.minute_aggregate(timescale_db, keywords=["Tesla"], at=old)
    assert [(r["n"], r["n_neg"], r["n_neu"]) for r in replayed] == [(2, 1, 1)]
    assert replayed[0]["avg_score"] == pytest.approx(-0.5)
    trend = queries.trend(timescale_db, keywords=["Tesla"], since=old, until=old + timedelta(minutes=2))
    assert [p.n for p in trend.series["Tesla"]] == [2, 0]
