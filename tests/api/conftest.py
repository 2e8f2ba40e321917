"""API test fixtures: airline tweets stored in real PostgreSQL, and live uvicorn servers over it."""

from __future__ import annotations

import pytest

from pipeline.settings import Settings
from tests.api.live import AIRLINES, live_server, read_airline_csv, score
from tests.fixtures.postgres import create_database, drop_database

API_KEY = "test-key-123"


def api_settings(url: str, **overrides) -> Settings:
    values = dict(
        database_url=url,
        keywords=AIRLINES,
        sentiment_engine="vader",
        alerts_enabled=False,
        notify_poll_seconds=0.1,
        ws_batch_ms=50,
        ws_sentiment_interval_seconds=0.5,
        ws_ping_seconds=5,
        retry_initial_backoff_seconds=0.2,
        retry_max_backoff_seconds=1.0,
        alert_email_to=["ops@example.com"],
        alert_allowed_recipients=["@example.com"],
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session")
def airline_tweets(airline_csv):
    """All 14,640 airline rows, scored with VADER (once per session)."""
    return score(read_airline_csv(airline_csv))


@pytest.fixture(scope="module")
def airline_db(pg_server_url, airline_tweets):
    """A PostgreSQL database holding every airline tweet, written through db.writes.write_tweets."""
    from db.database import open_database
    from db.writes import write_tweets

    url = create_database(pg_server_url)
    db = open_database(api_settings(url))
    try:
        for i in range(0, len(airline_tweets), 2000):
            write_tweets(db, airline_tweets[i : i + 2000])
    finally:
        db.close()
    yield url
    drop_database(pg_server_url, url)


@pytest.fixture(scope="module")
def server(airline_db):
    """A live API over the airline database, with API_KEY set."""
    with live_server(api_settings(airline_db, api_key=API_KEY, cors_origins=["http://dash.example"])) as srv:
        yield srv
