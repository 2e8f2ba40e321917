"""Alert test helpers: a database on SQLite and PostgreSQL, a tweet writer, and an evaluator factory
wired to a real aiosmtpd server."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from api.alerts.evaluator import AlertEvaluator
from api.alerts.rules import AlertRuleCreate
from db import alerts as store
from db.database import open_database
from db.writes import write_tweets
from pipeline.contracts import AnalyzedTweet

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a fixed "now" for evaluations driven by hand
KEYWORDS = ["Tesla", "Apple"]
PROBS = {"negative": (0.8, 0.15, 0.05), "neutral": (0.1, 0.8, 0.1), "positive": (0.05, 0.15, 0.8)}
_ids = itertools.count(1)


def tweets(keyword: str, *, start: datetime, count: int, every: timedelta = timedelta(seconds=5),
           label: str = "negative", score: float = -0.8, source: str = "x",
           text: Callable[[int], str] | None = None) -> list[AnalyzedTweet]:
    """`count` tweets for `keyword` from `start` on, one every `every`."""
    p_neg, p_neu, p_pos = PROBS[label]
    out = []
    for i in range(count):
        out.append(AnalyzedTweet(
            id=f"t{next(_ids)}", text=text(i) if text else f"{keyword} {label} tweet {i}",
            created_at=start + i * every, keyword=keyword, lang="en", source=source, label=label,
            p_neg=p_neg, p_neu=p_neu, p_pos=p_pos, score=score, engine="test", processed_at=start,
        ))
    return out


@pytest.fixture
def alert_db(db_url, make_settings):
    """Factory: an initialised Database on SQLite and PostgreSQL whose settings carry `overrides`."""
    opened = []

    def make(**overrides):
        settings = make_settings(
            database_url=db_url, keywords=KEYWORDS, alert_email_to="ops@example.com",
            retry_initial_backoff_seconds=0.05, retry_max_backoff_seconds=0.2, **overrides,
        )
        db = open_database(settings)
        opened.append(db)
        return db

    yield make
    for db in opened:
        db.close()


@pytest.fixture
def write():
    def _write(db, items):
        return write_tweets(db, items)

    return _write


@pytest.fixture
def rule():
    def _rule(db, **fields):
        defaults = dict(keyword=None, metric="avg_score_below", threshold=-0.5, window_minutes=5,
                        min_tweets=20, cooldown_minutes=30)
        defaults.update(fields)
        return store.create_rule(db, rule=AlertRuleCreate(**defaults))

    return _rule


@pytest.fixture
def evaluator():
    made = []

    def _make(db, **kwargs):
        ev = AlertEvaluator(db.settings, db, **kwargs)
        made.append(ev)
        return ev

    yield _make
    for ev in made:
        ev.lease.release()
