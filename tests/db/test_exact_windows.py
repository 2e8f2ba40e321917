"""summary() and keyword_counts() count exactly the tweets in [since, until) for unaligned windows.

Tweets sit at known seconds around minute edges; every expectation is recomputed from that same
list of placed tweets (the raw rows), never typed in, on SQLite and on real PostgreSQL.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from db import queries, writes
from db.database import open_database
from tests.db.conftest import make_tweet
from tests.fixtures.postgres import create_database, drop_database

B = datetime(2026, 3, 1, 20, 35, 0, tzinfo=UTC)  # minute-aligned base
#: Seconds inside each minute: both sides of :17 (the observed since), the minute edges, and a
#: sub-second one just below :17.
SECONDS = (0.0, 5.0, 16.0, 16.999999, 17.0, 18.0, 30.0, 59.0, 59.999999)
LABELS = ("negative", "neutral", "positive")


def _placed() -> list:
    tweets = []
    for minute in range(10):
        for i, sec in enumerate(SECONDS):
            label = LABELS[(minute + i) % 3]
            score = {"negative": -0.9, "neutral": 0.05, "positive": 0.7}[label] + minute / 100
            at = B + timedelta(minutes=minute, seconds=sec)
            tweets.append(make_tweet(keyword="Tesla", created_at=at, label=label, score=score))
            if i % 3 == 0:  # a second keyword, so the keyword filter and the all-keyword path differ
                tweets.append(make_tweet(keyword="Apple", created_at=at, label="positive", score=0.5))
    return tweets


def _expected(tweets, keyword: str | None, since: datetime | None, until: datetime | None) -> dict:
    chosen = [
        t for t in tweets
        if (keyword is None or t.keyword.lower() == keyword.lower())
        and (since is None or t.created_at >= since) and (until is None or t.created_at < until)
    ]
    n = len(chosen)
    return {
        "n": n,
        "n_neg": sum(t.label == "negative" for t in chosen),
        "n_neu": sum(t.label == "neutral" for t in chosen),
        "n_pos": sum(t.label == "positive" for t in chosen),
        "avg": sum(t.score for t in chosen) / n if n else None,
    }


@pytest.fixture
def placed(database):
    tweets = _placed()
    assert writes.write_tweets(database, tweets) == len(tweets)
    return tweets


# (until, window): unaligned at :17 as observed, windows inside one minute or across one edge, several
# whole minutes plus two partial edges, sub-second bounds, and an aligned window for contrast.
CASES = [
    (B + timedelta(minutes=6, seconds=17), timedelta(minutes=1)),
    (B + timedelta(minutes=6, seconds=17), timedelta(minutes=3)),
    (B + timedelta(minutes=7, seconds=17), timedelta(seconds=90)),
    (B + timedelta(minutes=6, seconds=40), timedelta(seconds=20)),  # inside one minute
    (B + timedelta(minutes=6, seconds=10), timedelta(seconds=30)),  # across one minute edge
    (B + timedelta(minutes=6, seconds=17, microseconds=1), timedelta(minutes=2)),
    (B + timedelta(minutes=6), timedelta(minutes=2)),  # aligned
]


@pytest.mark.parametrize(("until", "window"), CASES)
@pytest.mark.parametrize("keyword", ["Tesla", None])
def test_summary_counts_exactly_the_tweets_in_both_windows(database, placed, until, window, keyword):
    keywords = [keyword] if keyword else None
    s = queries.summary(database, keywords=keywords, window=window, until=until)
    since = until - window
    assert (s.since, s.until) == (since, until)
    now = _expected(placed, keyword, since, until)
    prev = _expected(placed, keyword, since - window, since)
    assert now["n"] > 0 and prev["n"] > 0  # the data really covers both windows
    assert (s.n, s.n_neg, s.n_neu, s.n_pos) == (now["n"], now["n_neg"], now["n_neu"], now["n_pos"])
    assert s.avg_score == pytest.approx(now["avg"])
    assert s.tweets_per_minute == pytest.approx(now["n"] / (window.total_seconds() / 60))
    assert (s.prev_n, s.change_n) == (prev["n"], now["n"] - prev["n"])
    assert s.prev_avg_score == pytest.approx(prev["avg"])
    assert s.change_avg_score == pytest.approx(now["avg"] - prev["avg"])


def test_one_minute_window_at_17s_keeps_the_partial_first_minute(database, placed):
    # The tester's case: at hh:mm:17 a 1-minute window is 43 s of the previous minute plus 17 s of
    # this one. Summing buckets with bucket >= since kept only the 17 s (and gave the 43 s to the
    # previous window).
    until = B + timedelta(minutes=6, seconds=17)
    s = queries.summary(database, keywords=["Tesla"], window=timedelta(minutes=1), until=until)
    this_minute_only = _expected(placed, "Tesla", B + timedelta(minutes=6), until)["n"]
    assert s.n == _expected(placed, "Tesla", until - timedelta(minutes=1), until)["n"]
    assert s.n > this_minute_only
    assert s.tweets_per_minute == s.n


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (B + timedelta(minutes=2, seconds=17), B + timedelta(minutes=6, seconds=17)),
        (B + timedelta(minutes=4, seconds=16, microseconds=999999), B + timedelta(minutes=4, seconds=17)),
        (B + timedelta(minutes=3, seconds=59), B + timedelta(minutes=4, seconds=1)),
        (B + timedelta(minutes=3), B + timedelta(minutes=5)),
        (B + timedelta(minutes=3, seconds=17), None),
        (None, B + timedelta(minutes=3, seconds=17)),
        (None, None),
    ],
)
def test_tracked_keyword_counts_are_exact(database, placed, since, until):
    got = queries.keyword_counts(database, term="tesla", since=since, until=until)
    want = _expected(placed, "Tesla", since, until)
    assert got.tracked
    assert (got.n, got.n_neg, got.n_neu, got.n_pos) == (
        want["n"], want["n_neg"], want["n_neu"], want["n_pos"])
    assert want["n"] > 0


def test_empty_and_reversed_ranges(database, placed):
    later = B + timedelta(minutes=30, seconds=17)
    empty = queries.summary(database, keywords=["Tesla"], window=timedelta(minutes=5), until=later)
    assert (empty.n, empty.avg_score, empty.prev_n, empty.change_avg_score) == (0, None, 0, None)
    at = B + timedelta(minutes=4, seconds=17)
    assert queries.keyword_counts(database, term="Tesla", since=at, until=at).n == 0
    assert queries.keyword_counts(database, term="Tesla", since=at, until=at - timedelta(minutes=2)).n == 0


@pytest.fixture
def timescale_db(make_settings):
    server = os.environ.get("TEST_TIMESCALE_URL")
    if not server:
        pytest.skip("TEST_TIMESCALE_URL not set: no TimescaleDB server for the continuous-aggregate case")
    url = create_database(server)
    db = open_database(make_settings(database_url=url, keywords=["Tesla", "Apple"]))
    try:
        yield db
    finally:
        db.close()
        drop_database(server, url)


def test_exact_on_timescaledb_continuous_aggregate(timescale_db):
    # The same split must hold over the real-time continuous aggregate.
    tweets = _placed()
    writes.write_tweets(timescale_db, tweets)
    for until, window in CASES:
        s = queries.summary(timescale_db, keywords=["Tesla"], window=window, until=until)
        since = until - window
        assert (s.n, s.prev_n) == (_expected(tweets, "Tesla", since, until)["n"],
                                   _expected(tweets, "Tesla", since - window, since)["n"])
    since, until = B + timedelta(minutes=2, seconds=17), B + timedelta(minutes=6, seconds=17)
    got = queries.keyword_counts(timescale_db, term="Tesla", since=since, until=until)
    assert got.n == _expected(tweets, "Tesla", since, until)["n"]
