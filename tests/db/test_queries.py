"""The query layer on SQLite and real PostgreSQL: pagination, trend re-bucketing, summary, keywords."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from db import queries, writes
from tests.db.conftest import make_tweet

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_rebucketed_average_is_count_weighted(database):
    # Minute 1: ten tweets at -1.0; minute 2: one tweet at +1.0. Average of averages would say 0.0.
    batch = [
        make_tweet(created_at=T0 + timedelta(seconds=i), label="negative", score=-1.0) for i in range(10)
    ]
    batch.append(make_tweet(created_at=T0 + timedelta(minutes=1), label="positive", score=1.0))
    writes.write_tweets(database, batch)
    trend = queries.trend(
        database, keywords=["Tesla"], since=T0, until=T0 + timedelta(minutes=5), bucket="5m"
    )
    assert trend.bucket_seconds == 300
    [point] = trend.series["Tesla"]
    assert (point.n, point.n_neg, point.n_pos) == (11, 10, 1)
    assert point.avg_score == pytest.approx(-9 / 11)
    assert point.avg_score != pytest.approx(0.0)


def test_empty_buckets_come_back_as_zeros(database):
    writes.write_tweets(
        database,
        [
            make_tweet(created_at=T0, label="negative", score=-0.5),
            make_tweet(created_at=T0 + timedelta(minutes=3, seconds=59), label="positive", score=0.5),
        ],
    )
    trend = queries.trend(database, keywords=["tesla", "Nobody"], since=T0, until=T0 + timedelta(minutes=5))
    assert trend.bucket_seconds == 60
    series = trend.series["tesla"]
    assert [p.bucket for p in series] == [T0 + timedelta(minutes=i) for i in range(5)]
    assert [p.n for p in series] == [1, 0, 0, 1, 0]
    assert [p.avg_score for p in series] == [-0.5, None, None, 0.5, None]
    assert series[1].n_neg == series[1].n_neu == series[1].n_pos == 0
    assert [p.n for p in trend.series["Nobody"]] == [0] * 5


def test_trend_buckets_align_to_the_width_and_coarsen(database):
    writes.write_tweets(database, [make_tweet(created_at=T0 + timedelta(minutes=7), score=0.3)])
    trend = queries.trend(
        database,
        keywords=["Tesla"],
        since=T0 + timedelta(minutes=2),
        until=T0 + timedelta(minutes=31),
        bucket="15m",
    )
    assert [p.bucket for p in trend.series["Tesla"]] == [
        T0,
        T0 + timedelta(minutes=15),
        T0 + timedelta(minutes=30),
    ]
    assert trend.since == T0
    assert [p.n for p in trend.series["Tesla"]] == [1, 0, 0]
    # 30 days at 1m would be 43,200 buckets: coarsened to keep <= 2000.
    month = queries.trend(database, keywords=["Tesla"], since=T0 - timedelta(days=30), until=T0, bucket="1m")
    assert month.bucket_seconds == 3600  # 15m would still give 2,880
    assert len(month.series["Tesla"]) <= queries.MAX_BUCKETS
    year = queries.trend(database, keywords=["Tesla"], since=T0 - timedelta(days=3650), until=T0)
    assert len(year.series["Tesla"]) <= queries.MAX_BUCKETS
    with pytest.raises(ValueError):
        queries.trend(database, keywords=["Tesla"], since=T0, until=T0 + timedelta(hours=1), bucket="7m")
    with pytest.raises(ValueError):
        queries.trend(database, keywords=["Tesla"], since=T0, until=T0)


def test_choose_bucket_ladder():
    day = timedelta(days=1)
    assert queries.choose_bucket(T0, T0 + day, None) == 60
    assert queries.choose_bucket(T0, T0 + 2 * day, None) == 300
    assert queries.choose_bucket(T0, T0 + 2 * day, "1h") == 3600
    assert queries.choose_bucket(T0, T0 + 7 * day, "1m") == 900


def test_summary_and_previous_window(database):
    until = T0 + timedelta(hours=2)
    writes.write_tweets(
        database,
        [
            # previous hour: two tweets, average 0.5
            make_tweet(created_at=T0 + timedelta(minutes=10), label="positive", score=0.4),
            make_tweet(created_at=T0 + timedelta(minutes=20), label="positive", score=0.6),
            # current hour: four tweets, average -0.25
            make_tweet(created_at=T0 + timedelta(minutes=61), label="negative", score=-0.5),
            make_tweet(created_at=T0 + timedelta(minutes=62), label="negative", score=-0.5),
            make_tweet(created_at=T0 + timedelta(minutes=63), label="neutral", score=0.0),
            make_tweet(created_at=T0 + timedelta(minutes=119), label="neutral", score=0.0),
            make_tweet(created_at=T0 + timedelta(minutes=63), keyword="Apple", label="positive", score=1.0),
        ],
    )
    s = queries.summary(database, keywords=["TESLA"], window=timedelta(hours=1), until=until)
    assert (s.since, s.until) == (T0 + timedelta(hours=1), until)
    assert (s.n, s.n_neg, s.n_neu, s.n_pos) == (4, 2, 2, 0)
    assert (s.share_neg, s.share_neu, s.share_pos) == (0.5, 0.5, 0.0)
    assert s.avg_score == pytest.approx(-0.25)
    assert s.tweets_per_minute == pytest.approx(4 / 60)
    assert (s.prev_n, s.change_n) == (2, 2)
    assert s.prev_avg_score == pytest.approx(0.5)
    assert s.change_avg_score == pytest.approx(-0.75)
    everything = queries.summary(database, keywords=None, window=timedelta(hours=1), until=until)
    assert everything.n == 5
    empty = queries.summary(
        database, keywords=["Tesla"], window=timedelta(hours=1), until=T0 - timedelta(days=1)
    )
    assert (empty.n, empty.avg_score, empty.share_neg, empty.change_avg_score) == (0, None, 0.0, None)
    with pytest.raises(ValueError):
        queries.summary(database, keywords=None, window=timedelta(0))


def test_summary_defaults_to_now_and_includes_the_current_minute(database):
    writes.write_tweets(database, [make_tweet(score=0.2)])
    s = queries.summary(database, keywords=["Tesla"], window=timedelta(minutes=5))
    assert s.n == 1
    assert datetime.now(UTC) - s.until < timedelta(seconds=30)
    rows = queries.minute_aggregate(database, keywords=["tesla"])
    assert [(r["keyword"], r["n"], r["avg_score"]) for r in rows] == [("Tesla", 1, pytest.approx(0.2))]
    assert queries.minute_aggregate(database, keywords=["Apple"]) == []


def test_keyset_pagination_has_no_gaps_or_duplicates(database):
    # Many rows share a timestamp so the seq tie-breaker matters.
    batch = [
        make_tweet(
            created_at=T0 + timedelta(seconds=i // 4),
            label=("negative", "positive")[i % 2],
            text=f"tweet {i} {'Delayed' if i % 3 == 0 else 'fine'}",
        )
        for i in range(103)
    ]
    writes.write_tweets(database, batch)
    for kwargs, expected in [
        ({}, 103),
        ({"label": "negative"}, 52),
        ({"q": "delayed"}, 35),
        ({"keywords": ["TESLA"], "q": "DELAYED", "label": "positive"}, 17),
        ({"keywords": ["Apple"]}, 0),
    ]:
        seen, cursor, pages = [], None, 0
        while True:
            page = queries.latest_tweets(database, limit=10, cursor=cursor, **kwargs)
            seen.extend(page.data)
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
        assert len(seen) == expected, kwargs
        assert len({(r.id, r.keyword, r.created_at) for r in seen}) == expected
        keys = [(r.created_at, r.seq) for r in seen]
        assert keys == sorted(keys, reverse=True)
        assert pages == max(1, -(-expected // 10))


def test_text_filter_escapes_like_wildcards(database):
    writes.write_tweets(
        database,
        [
            make_tweet(text="100% on time"),
            make_tweet(text="1000 on time"),
            make_tweet(text="a_b"),
            make_tweet(text="axb"),
        ],
    )
    assert [r.text for r in queries.latest_tweets(database, q="0%").data] == ["100% on time"]
    assert [r.text for r in queries.latest_tweets(database, q="a_b").data] == ["a_b"]


def test_bad_cursor_and_label_raise_value_error(database):
    for cursor in ["garbage", "!!!", "WyJ4IiwgMV0", "W10"]:
        with pytest.raises(ValueError):
            queries.latest_tweets(database, cursor=cursor)
    with pytest.raises(ValueError):
        queries.latest_tweets(database, label="angry")


def test_page_limit_is_bounded(database):
    writes.write_tweets(database, [make_tweet(created_at=T0 + timedelta(seconds=i)) for i in range(600)])
    assert len(queries.latest_tweets(database, limit=10_000).data) == queries.MAX_PAGE
    assert len(queries.latest_tweets(database, limit=0).data) == 1


def test_keyword_counts_tracked_and_text_search(database):
    writes.write_tweets(
        database,
        [
            make_tweet(id="1", keyword="Tesla", label="negative", text="Cybertruck recall", created_at=T0),
            make_tweet(id="1", keyword="Apple", label="negative", text="Cybertruck recall", created_at=T0),
            make_tweet(id="2", keyword="Tesla", label="positive", text="love my CYBERTRUCK", created_at=T0),
            make_tweet(
                id="3", keyword="Tesla", label="neutral", text="model y", created_at=T0 + timedelta(hours=1)
            ),
        ],
    )
    tracked = queries.keyword_counts(database, term="tesla")
    assert (tracked.tracked, tracked.n, tracked.n_neg, tracked.n_neu, tracked.n_pos) == (True, 3, 1, 1, 1)
    windowed = queries.keyword_counts(database, term="Tesla", since=T0, until=T0 + timedelta(minutes=30))
    assert windowed.n == 2
    search = queries.keyword_counts(database, term="cybertruck")
    # Tweet 1 is stored under two keywords but is one tweet.
    assert (search.tracked, search.n, search.n_neg, search.n_pos) == (False, 2, 1, 1)
    assert queries.keyword_counts(database, term="nothing-matches").n == 0
    with pytest.raises(ValueError):
        queries.keyword_counts(database, term="  ")


def test_keywords_lists_tracked_and_seen(database):
    writes.write_tweets(
        database,
        [
            make_tweet(keyword="tesla", created_at=T0),
            make_tweet(keyword="Tesla", created_at=T0),
            make_tweet(keyword="Rivian", created_at=T0 + timedelta(minutes=5)),
        ],
    )
    info = {k.keyword: k for k in queries.keywords(database)}
    assert list(info) == ["Tesla", "United", "Apple", "Rivian"]
    assert (info["Tesla"].tracked, info["Tesla"].n, info["Tesla"].last_seen) == (True, 2, T0)
    assert (info["United"].n, info["United"].last_seen) == (0, None)
    assert (info["Rivian"].tracked, info["Rivian"].n) == (False, 1)
    assert info["Rivian"].last_seen == T0 + timedelta(minutes=5)


def test_latest_tweet_time(database):
    assert queries.latest_tweet_time(database) is None
    writes.write_tweets(
        database,
        [
            make_tweet(keyword="Tesla", created_at=T0),
            make_tweet(keyword="Apple", created_at=T0 + timedelta(minutes=1)),
        ],
    )
    assert queries.latest_tweet_time(database) == T0 + timedelta(minutes=1)
    assert queries.latest_tweet_time(database, keywords=["TESLA"]) == T0
    assert queries.latest_tweet_time(database, keywords=["United"]) is None


def test_window_stats_and_most_negative_exclude_sources(database):
    writes.write_tweets(
        database,
        [
            make_tweet(created_at=T0, label="negative", score=-0.9, source="x", text="worst"),
            make_tweet(
                created_at=T0 + timedelta(minutes=1), label="negative", score=-0.5, source="x", text="bad"
            ),
            make_tweet(created_at=T0 + timedelta(minutes=1), label="positive", score=0.8, source="x"),
            make_tweet(created_at=T0 + timedelta(minutes=2), label="negative", score=-1.0, source="mock"),
            make_tweet(created_at=T0 + timedelta(minutes=10), label="negative", score=-1.0, source="x"),
        ],
    )
    since, until = T0, T0 + timedelta(minutes=5)
    stats = queries.window_stats(
        database, keyword="tesla", since=since, until=until, exclude_sources=("mock",)
    )
    assert (stats["n"], stats["n_neg"], stats["n_neu"], stats["n_pos"]) == (3, 2, 0, 1)
    assert stats["avg_score"] == pytest.approx((-0.9 - 0.5 + 0.8) / 3)
    assert queries.window_stats(database, keyword="Tesla", since=since, until=until)["n"] == 4
    none = queries.window_stats(database, keyword="Apple", since=since, until=until)
    assert none == {"n": 0, "n_neg": 0, "n_neu": 0, "n_pos": 0, "avg_score": None}
    worst = queries.most_negative(
        database, keyword="Tesla", since=since, until=until, limit=2, exclude_sources=("mock",)
    )
    assert [r.text for r in worst] == ["worst", "bad"]


def test_keyword_lists_are_bounded(database):
    many = [f"kw{i}" for i in range(queries.MAX_KEYWORDS + 1)]
    with pytest.raises(ValueError):
        queries.trend(database, keywords=many, since=T0, until=T0 + timedelta(hours=1))
    with pytest.raises(ValueError):
        queries.latest_tweets(database, keywords=many)
