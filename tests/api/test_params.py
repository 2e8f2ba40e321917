"""Parameter parsing: durations, timestamps, terms (the 422 messages users see)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.params import (
    BadParameter,
    check_range,
    clean_term,
    clean_terms,
    keyword_filter,
    parse_time,
    parse_window,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("90s", timedelta(seconds=90)),
        (" 2H ", timedelta(hours=2)),
        ("30min", timedelta(minutes=30)),
    ],
)
def test_windows(text, expected):
    assert parse_window(text) == expected


@pytest.mark.parametrize("text", ["", "h", "15", "1w", "-1h", "1.5h", "0m", "30s", "400d", "9" * 7 + "d"])
def test_bad_windows(text):
    with pytest.raises(BadParameter) as info:
        parse_window(text)
    assert info.value.param == "window"


def test_times_are_utc():
    assert parse_time("2015-02-24T11:35:52-08:00", param="since") == datetime(
        2015, 2, 24, 19, 35, 52, tzinfo=UTC
    )
    assert parse_time("2015-02-24T19:35:52Z", param="since") == datetime(2015, 2, 24, 19, 35, 52, tzinfo=UTC)
    assert parse_time("2015-02-24", param="since") == datetime(2015, 2, 24, tzinfo=UTC)
    assert parse_time(None, param="since") is None and parse_time("", param="since") is None


@pytest.mark.parametrize(
    "text",
    [
        "not-a-date",
        "2015-13-01",
        "0001-01-01T00:00:00+05:00",
        "1900-01-01",
        "2500-01-01",
        "9999-12-31T23:59:59-05:00",
    ],
)
def test_bad_times(text):
    with pytest.raises(BadParameter, match="since"):
        parse_time(text, param="since")


def test_range_and_terms():
    a, b = datetime(2015, 2, 1, tzinfo=UTC), datetime(2015, 2, 2, tzinfo=UTC)
    check_range(a, b)
    check_range(None, b)
    with pytest.raises(BadParameter, match="until"):
        check_range(b, a)
    assert clean_term("  United ", param="keyword") == "United"
    assert clean_term("   ", param="keyword") is None
    for bad in ("a\x00b", "x" * 201, "tab\there"):
        with pytest.raises(BadParameter):
            clean_term(bad, param="keyword")
    assert clean_terms(["United,Delta", "united"], param="keyword") == ["United", "Delta"]
    assert clean_terms([], param="keyword") is None
    for blank in ([""], [" "], ["United", ""], [","]):
        with pytest.raises(BadParameter, match="keyword: is empty \\(leave the parameter out"):
            clean_terms(blank, param="keyword")
    assert keyword_filter(None) is None and keyword_filter(" Delta ") == "Delta"
    with pytest.raises(BadParameter, match="keyword: is empty"):
        keyword_filter("  ")


def test_subscriber_queue_drops_when_full_and_counts_it():
    import asyncio

    from api.notifier import Subscriber

    async def scenario():
        sub = Subscriber(channel="tweets", keyword="United", queue_size=2)
        assert sub.offer("a") and sub.offer("b") and not sub.offer("c")
        assert await sub.wait(0.01)
        assert sub.drain() == (["a", "b"], 1)
        assert sub.drain() == ([], 0) and not await sub.wait(0.01)
        latest = Subscriber(channel="sentiment", keyword=None, queue_size=1)
        latest.offer("old", replace=True)
        latest.offer("new", replace=True)
        assert latest.drain() == (["new"], 0)

    asyncio.run(scenario())
