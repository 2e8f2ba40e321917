"""Schema start-up: idempotent init, recorded version and mode, `python -m db init`, bad URLs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from db import schema
from db.database import DatabaseUnavailable, init_schema, open_database, ping
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXPECTED_TABLES = {
    "tweets",
    "sentiment_1m",
    "tracked_keywords",
    "stage_heartbeats",
    "pipeline_state",
    "dead_letters",
    "alert_rules",
    "alert_state",
    "alert_events",
    "evaluator_lease",
    "schema_version",
}


def _run_init(url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": url, "KEYWORDS": "Tesla,United"}
    return subprocess.run(
        [sys.executable, "-m", "db", "init"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_python_m_db_init_twice_is_idempotent(db_url):
    first = _run_init(db_url)
    assert first.returncode == 0, first.stderr
    second = _run_init(db_url)
    assert second.returncode == 0, second.stderr
    expected_mode = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    assert f"schema version {schema.SCHEMA_VERSION} ready: mode={expected_mode}" in second.stdout
    assert f"mode={expected_mode}" in second.stderr  # the mode is logged
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            assert EXPECTED_TABLES <= set(sa.inspect(conn).get_table_names())
            versions = conn.execute(sa.text("SELECT version, mode FROM schema_version")).all()
            assert [tuple(v) for v in versions] == [(schema.SCHEMA_VERSION, expected_mode)]
            tracked = conn.execute(sa.text("SELECT keyword FROM tracked_keywords ORDER BY keyword")).scalars()
            assert list(tracked) == ["Tesla", "United"]
    finally:
        engine.dispose()


def test_init_schema_repeats_without_error_and_keeps_data(database):
    from db import writes
    from tests.db.conftest import make_tweet

    writes.write_tweets(database, [make_tweet()])
    init_schema(database)
    init_schema(database)
    with database.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM tweets")).scalar() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM schema_version")).scalar() == 1


def test_postgres_has_trigram_index_and_plain_mode(pg_database):
    assert pg_database.mode == "postgresql"
    assert "pg_trgm" in pg_database.features
    with pg_database.engine.connect() as conn:
        indexes = set(
            conn.execute(sa.text("SELECT indexname FROM pg_indexes WHERE tablename = 'tweets'")).scalars()
        )
    assert {
        "tweets_pkey",
        "ix_tweets_created_seq",
        "ix_tweets_kw_created_seq",
        "ix_tweets_seq",
        "ix_tweets_text_trgm",
    } <= indexes


def test_open_without_init_detects_the_recorded_mode(db_url, make_settings, database):
    again = open_database(make_settings(database_url=db_url), init=False)
    try:
        assert again.mode == database.mode
    finally:
        again.close()


def test_sqlite_creates_parent_directory_and_uses_wal(tmp_path, make_settings):
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'sp.db'}"
    db = open_database(make_settings(database_url=url))
    try:
        assert (tmp_path / "nested" / "dir" / "sp.db").exists()
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
    finally:
        db.close()


def test_unreachable_postgres_raises_database_unavailable(make_settings):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg2://nobody:secret@127.0.0.1:{port}/none"
    with pytest.raises(DatabaseUnavailable) as info:
        open_database(make_settings(database_url=url))
    assert "secret" not in str(info.value)
    assert "***" in str(info.value)


def test_ping_raises_when_the_server_goes_away(throwaway_pg, make_settings):
    db = open_database(make_settings(database_url=throwaway_pg.url))
    try:
        ping(db)
        throwaway_pg.down()
        with pytest.raises(DatabaseUnavailable):
            ping(db)
        throwaway_pg.up()
        ping(db)  # pool_pre_ping replaces the dead connections
    finally:
        db.close()


def test_unsupported_url_is_a_config_error(make_settings):
    with pytest.raises(ConfigError):
        open_database(make_settings(database_url="mysql://x@localhost/db"))


def test_init_adds_indexes_missing_from_existing_tables(database):
    with database.engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_sentiment_1m_kw_bucket")
    init_schema(database)
    with database.engine.connect() as conn:
        if database.is_sqlite:
            names = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'").scalars()
        else:
            names = conn.exec_driver_sql("SELECT indexname FROM pg_indexes").scalars()
        assert "ix_sentiment_1m_kw_bucket" in set(names)


def test_in_memory_sqlite_is_shared_across_threads(make_settings):
    import threading

    from db import queries, writes
    from tests.db.conftest import make_tweet

    db = open_database(make_settings(database_url="sqlite://"))
    try:
        writes.write_tweets(db, [make_tweet()])
        seen = []
        worker = threading.Thread(target=lambda: seen.append(len(queries.latest_tweets(db).data)))
        worker.start()
        worker.join(10)
        assert seen == [1]
    finally:
        db.close()
