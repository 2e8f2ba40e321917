"""Replay the real airline export (duplicates included), then redeliver it all: aggregates stay exact."""

from __future__ import annotations

import csv
import random
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from db import queries, schema, writes
from tests.db.conftest import make_tweet
from tests.db.test_writes import aggregate_rows, count_tweets, expected_from_raw

SCORE = {"negative": -1.0, "neutral": 0.0, "positive": 1.0}


def load_airline(path) -> list:
    tweets = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            label = row["label"]
            # Storage tests need a label and a varied score, not a model: derive both from the gold label.
            magnitude = 0.1 + (int(row["id"]) % 89) / 100
            tweets.append(
                make_tweet(
                    id=row["id"],
                    keyword=row["keyword"],
                    created_at=datetime.fromisoformat(row["created_at"]),
                    label=label,
                    score=round(SCORE[label] * magnitude, 4),
                    text=row["text"],
                    source="replay",
                    gold_label=label,
                )
            )
    return tweets


def test_airline_replay_and_redelivery_keep_aggregates_exact(database, airline_csv):
    tweets = load_airline(airline_csv)
    assert len(tweets) == 14_640
    distinct = {(t.id, t.keyword, t.created_at) for t in tweets}
    assert len(distinct) == 14_485

    inserted = sum(writes.write_tweets(database, tweets[i : i + 1000]) for i in range(0, len(tweets), 1000))
    assert inserted == 14_485
    assert count_tweets(database) == 14_485

    # Redeliver the whole stream, shuffled and in different batch sizes: nothing new, nothing counted.
    again = tweets[:]
    random.Random(7).shuffle(again)
    redelivered = sum(writes.write_tweets(database, again[i : i + 777]) for i in range(0, len(again), 777))
    assert redelivered == 0
    assert count_tweets(database) == 14_485

    aggregate = aggregate_rows(database)
    assert aggregate == expected_from_raw(database)
    assert sum(v[0] for v in aggregate.values()) == 14_485

    # The SQL-side GROUP BY of raw rows agrees with the aggregate too (per keyword totals).
    T = schema.tweets
    with database.engine.connect() as conn:
        raw_totals = dict(conn.execute(sa.select(T.c.keyword, sa.func.count()).group_by(T.c.keyword)).all())
    kw_totals = {}
    for (_, kw), v in aggregate.items():
        kw_totals[kw] = kw_totals.get(kw, 0) + v[0]
    assert kw_totals == raw_totals
    assert raw_totals["United"] == len({t.id for t in tweets if t.keyword == "United"})

    # Hourly trend over the whole export equals the raw counts, bucket by bucket.
    since = datetime(2015, 2, 17, 7, 0, tzinfo=UTC)
    until = datetime(2015, 2, 24, 20, 0, tzinfo=UTC)
    trend = queries.trend(database, keywords=["United", "JetBlue"], since=since, until=until, bucket="1h")
    assert trend.bucket_seconds == 3600
    assert len(trend.series["United"]) == (until - since) // timedelta(hours=1)
    unique = {(t.id, t.keyword, t.created_at): t for t in tweets}.values()
    united = [t for t in unique if t.keyword == "United"]
    by_hour = {}
    for t in united:
        hour = t.created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        by_hour.setdefault(hour, []).append(t)
    for point in trend.series["United"]:
        rows = by_hour.get(point.bucket, [])
        assert point.n == len(rows)
        assert point.n_neg == sum(1 for t in rows if t.label == "negative")
        if rows:
            assert abs(point.avg_score - sum(t.score for t in rows) / len(rows)) < 1e-9
        else:
            assert point.avg_score is None
