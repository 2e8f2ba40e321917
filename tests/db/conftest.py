"""Storage test helpers: an initialised Database on SQLite and PostgreSQL, and a tweet factory."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from db.database import open_database
from pipeline.contracts import AnalyzedTweet

_ids = itertools.count(1)

PROBS = {"negative": (0.8, 0.15, 0.05), "neutral": (0.1, 0.8, 0.1), "positive": (0.05, 0.15, 0.8)}


def make_tweet(
    *,
    id: str | None = None,
    keyword: str = "Tesla",
    created_at: datetime | None = None,
    label: str = "neutral",
    score: float = 0.0,
    text: str = "a tweet",
    source: str = "mock",
    gold_label: str | None = None,
    lang: str | None = "en",
) -> AnalyzedTweet:
    p_neg, p_neu, p_pos = PROBS[label]
    return AnalyzedTweet(
        id=id or str(next(_ids)),
        text=text,
        created_at=created_at or datetime.now(UTC),
        keyword=keyword,
        lang=lang,
        source=source,
        gold_label=gold_label,
        label=label,
        p_neg=p_neg,
        p_neu=p_neu,
        p_pos=p_pos,
        score=score,
        engine="test",
        processed_at=datetime.now(UTC),
    )


@pytest.fixture
def tweet():
    return make_tweet


@pytest.fixture
def database(db_url, make_settings):
    """An initialised Database, on SQLite and on real PostgreSQL (via the db_url fixture)."""
    db = open_database(make_settings(database_url=db_url, keywords=["Tesla", "United", "Apple"]))
    yield db
    db.close()


@pytest.fixture
def pg_database(pg_url, make_settings):
    db = open_database(make_settings(database_url=pg_url, keywords=["Tesla", "United", "Apple"]))
    yield db
    db.close()


@pytest.fixture
def sqlite_database(sqlite_url, make_settings):
    db = open_database(make_settings(database_url=sqlite_url, keywords=["Tesla", "United", "Apple"]))
    yield db
    db.close()
