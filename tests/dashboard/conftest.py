"""Dashboard fixtures: a database filled through db.writes, and an AppTest of dashboard/app.py
pointed at it through DATABASE_URL (the app reads its settings from the environment at run time)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.contracts import AnalyzedTweet

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard" / "app.py")
KEYWORDS = ["United", "Delta"]

_SCORES = {"negative": -0.7, "neutral": 0.0, "positive": 0.6}


def analyzed(*, id: str, keyword: str, text: str, created_at: datetime, label: str,
             score: float | None = None, source: str = "replay") -> AnalyzedTweet:
    score = _SCORES[label] if score is None else score
    p = {"negative": (0.8, 0.15, 0.05), "neutral": (0.1, 0.8, 0.1), "positive": (0.05, 0.15, 0.8)}[label]
    return AnalyzedTweet(id=id, text=text, created_at=created_at, keyword=keyword, source=source,
                         label=label, p_neg=p[0], p_neu=p[1], p_pos=p[2], score=score, engine="vader",
                         processed_at=datetime.now(UTC))


def burst(keyword: str, labels: list[str], *, end: datetime, minutes: int = 20, prefix: str = "",
          text: str = "flight") -> list[AnalyzedTweet]:
    """One tweet per label, spread evenly over the `minutes` before `end`."""
    step = timedelta(minutes=minutes) / max(len(labels), 1)
    return [
        analyzed(id=f"{prefix}{keyword}-{i}", keyword=keyword, text=f"{keyword} {text} {label} #{i}",
                 created_at=end - step * (i + 1), label=label)
        for i, label in enumerate(labels)
    ]


@dataclass
class DashDB:
    url: str
    db: object
    settings: object

    def write(self, tweets) -> int:
        from db.writes import write_tweets

        return write_tweets(self.db, tweets)


def _open(make_settings, url: str) -> DashDB:
    from db.database import open_database

    settings = make_settings(database_url=url, keywords=KEYWORDS)
    return DashDB(url=url, db=open_database(settings), settings=settings)


@pytest.fixture
def empty_db(make_settings, sqlite_url):
    d = _open(make_settings, sqlite_url)
    yield d
    d.db.close()


@pytest.fixture
def filled_db(make_settings, sqlite_url):
    """United: 30 mostly negative tweets, Delta: 12 mostly positive ones, all in the last 20 minutes;
    one United tweet mentions 'luggage' (an untracked term)."""
    d = _open(make_settings, sqlite_url)
    fill(d)
    yield d
    d.db.close()


@pytest.fixture
def filled_any_db(make_settings, db_url):
    """filled_db on SQLite and on real PostgreSQL."""
    d = _open(make_settings, db_url)
    fill(d)
    yield d
    d.db.close()


def fill(d: DashDB) -> None:
    rng = random.Random(7)
    end = datetime.now(UTC) - timedelta(seconds=30)
    united = ["negative"] * 20 + ["neutral"] * 6 + ["positive"] * 4
    delta = ["positive"] * 8 + ["neutral"] * 3 + ["negative"]
    rng.shuffle(united)
    rng.shuffle(delta)
    tweets = burst("United", united, end=end) + burst("Delta", delta, end=end)
    tweets.append(analyzed(id="lug-1", keyword="United", text="United lost my luggage again",
                           created_at=end - timedelta(minutes=2), label="negative"))
    assert d.write(tweets) == len(tweets)


@pytest.fixture
def app_env(monkeypatch):
    """Environment for an AppTest run, with Streamlit's process-wide caches emptied."""
    import streamlit as st

    def point_at(url: str, **env: str):
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setenv("KEYWORDS", ",".join(KEYWORDS))
        monkeypatch.setenv("DASHBOARD_PASSWORD", "")
        monkeypatch.setenv("DASHBOARD_TZ", "UTC")
        monkeypatch.setenv("ALERT_EMAIL_TO", "ops@example.com")
        monkeypatch.setenv("ALERT_ALLOWED_RECIPIENTS", "@example.com")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        st.cache_data.clear()
        st.cache_resource.clear()

    yield point_at
    st.cache_data.clear()
    st.cache_resource.clear()


def new_app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(APP, default_timeout=60)
