"""Dashboard logic without Streamlit: windows, anchoring, time zones, the status line, the CSV."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from dashboard import state

NOW = datetime(2026, 3, 1, 12, 0, 30, 750_000, tzinfo=UTC)


def test_relative_window_ends_now_on_a_whole_second():
    w = state.resolve_window("1 h", now=NOW)
    assert w.until == NOW.replace(microsecond=0)
    assert w.length == timedelta(hours=1)
    assert not w.anchored


def test_anchored_window_ends_just_after_the_latest_tweet():
    latest = datetime(2015, 2, 24, 19, 35, 52, tzinfo=UTC)
    w = state.resolve_window("6 h", now=NOW, anchor=latest)
    assert w.anchored and w.since <= latest < w.until
    assert w.length == timedelta(hours=6)


def test_custom_window_is_validated():
    start = datetime(2026, 3, 1, 10, tzinfo=UTC)
    w = state.resolve_window("Custom", now=NOW, custom=(start, start + timedelta(hours=2)))
    assert (w.since, w.until) == (start, start + timedelta(hours=2))
    with pytest.raises(ValueError, match="end after it starts"):
        state.resolve_window("Custom", now=NOW, custom=(start, start))
    with pytest.raises(ValueError, match="unknown time range"):
        state.resolve_window("2 weeks", now=NOW)


def test_anchor_offered_only_for_an_empty_window_with_older_tweets():
    w = state.resolve_window("1 h", now=NOW)
    old = NOW - timedelta(days=3000)
    assert state.needs_anchor_offer(n_in_window=0, latest=old, window=w)
    assert not state.needs_anchor_offer(n_in_window=5, latest=old, window=w)
    assert not state.needs_anchor_offer(n_in_window=0, latest=None, window=w)
    anchored = state.resolve_window("1 h", now=NOW, anchor=old)
    assert not state.needs_anchor_offer(n_in_window=0, latest=old, window=anchored)


def test_timezone_preference_setting_then_browser_then_utc():
    assert state.resolve_timezone(setting="Europe/Paris", browser="Asia/Tokyo") == "Europe/Paris"
    assert state.resolve_timezone(setting=None, browser="Asia/Tokyo") == "Asia/Tokyo"
    assert state.resolve_timezone(setting="Not/AZone", browser=None) == "UTC"
    assert state.fmt_time(datetime(2026, 7, 1, 12, tzinfo=UTC), "Europe/Paris") == "2026-07-01 14:00:00 CEST"


def test_keyword_matching_is_case_insensitive_and_keeps_the_stored_spelling():
    assert state.match_keyword("  united ", ["Delta", "United"]) == "United"
    assert state.match_keyword("luggage", ["Delta", "United"]) is None
    assert state.match_keyword("", ["Delta"]) is None
    assert state.clean_term("  lost   luggage ") == "lost luggage"


@dataclass
class HB:
    stage: str
    instance: str
    engine: str | None
    rate: float | None
    lag: int | None
    details: dict = field(default_factory=dict)
    last_seen: datetime | None = None


def test_status_line_names_engine_mode_rate_lag_and_rate_limit_pause():
    until = NOW + timedelta(minutes=4)
    beats = [
        HB("processor", "p1", "transformer:cardiffnlp/twitter-roberta-base-sentiment-latest", 40.0, 12,
           last_seen=NOW - timedelta(seconds=2)),
        HB("ingestor", "i1", None, 39.5, 3, last_seen=NOW - timedelta(seconds=1)),
        HB("producer-x", "x1", None, 0.0, None, {"rate_limited_until": until.isoformat()},
           last_seen=NOW - timedelta(seconds=3)),
    ]
    line = state.status_line(heartbeats=beats, mode="timescaledb", latest=NOW - timedelta(seconds=5), now=NOW,
                             zone="UTC", stale_after=timedelta(seconds=30))
    assert "engine transformer:cardiffnlp/twitter-roberta-base-sentiment-latest" in line.text
    assert "DB timescaledb" in line.text
    assert "ingest 39.5 tweets/s" in line.text
    assert "lag 12 msgs" in line.text
    assert "5 s ago" in line.text
    assert any("X rate limit" in w and "producer-x" in w for w in line.warnings)


def test_status_line_flags_silent_stages_and_no_stages():
    old = HB("processor", "p1", "vader", 1.0, 0, last_seen=NOW - timedelta(minutes=2))
    line = state.status_line(heartbeats=[old], mode="sqlite", latest=None, now=NOW, zone="UTC",
                             stale_after=timedelta(seconds=30))
    assert "last tweet never" in line.text
    assert "ingest" not in line.text  # a stale rate is not shown as current
    assert any("processor" in w and "last reported" in w for w in line.warnings)
    empty = state.status_line(heartbeats=[], mode="sqlite", latest=None, now=NOW, zone="UTC",
                              stale_after=timedelta(seconds=30))
    assert any(state.PRODUCER_HINT in w for w in empty.warnings)


def test_status_line_does_not_warn_about_stopped_or_long_gone_stages():
    """After a clean stop (details state=stopped) or an earlier run's row (> 1 h old), no warning:
    only a running stage that went silent is one."""
    stopped = HB("ingestor", "ingestor@vm:4766", None, 0.0, 0, {"state": "stopped", "total": 40},
                 last_seen=NOW - timedelta(minutes=2))
    gone = HB("processor", "processor@vm:4000", "vader", 1.0, 0, last_seen=NOW - timedelta(hours=3))
    silent = HB("producer-mock", "mock@vm:5000", None, 2.0, None, last_seen=NOW - timedelta(minutes=2))
    line = state.status_line(heartbeats=[stopped, gone, silent], mode="sqlite", latest=None, now=NOW,
                             zone="UTC", stale_after=timedelta(seconds=30))
    assert line.warnings == ["The producer-mock stage (mock@vm:5000) last reported 2 min ago."]
    assert "stopped: ingestor" in line.text
    # A stopped stage that beat a moment ago is not counted as live either (its rate is not current).
    fresh_stop = HB("ingestor", "i2", None, 9.0, 0, {"state": "stopped"},
                    last_seen=NOW - timedelta(seconds=1))
    line = state.status_line(heartbeats=[fresh_stop], mode="sqlite", latest=None, now=NOW, zone="UTC",
                             stale_after=timedelta(seconds=30))
    assert line.warnings == [] and "ingest 9.0" not in line.text and "stopped: ingestor" in line.text


@pytest.mark.parametrize(("term", "reason"), [
    ("y" * 201, "longer than 200 characters"),
    ("   ", "empty"),
    ("bad\x07term", "U+0007"),
    ("Uni\u200bted", "U+200B"),
    ("\u202eteltsE", "U+202E"),
], ids=["too-long", "blank", "control", "zero-width", "bidi"])
def test_term_problem_refuses_what_the_api_refuses(term, reason):
    assert reason in state.term_problem(term)


def test_term_problem_accepts_a_200_character_term_and_accents():
    assert state.term_problem("y" * 200) is None
    assert state.term_problem("Café Zürich ✈") is None
    assert state.clean_term("y" * 300) == "y" * 300  # not silently shortened: refused instead


def test_tweet_records_and_csv_carry_the_source():
    rows = [Row("1", "United", NOW, "mock one", "neutral", 0.0, source="mock"),
            Row("2", "United", NOW, "real one", "negative", -0.5, source="x")]
    records = state.tweet_records(rows, "UTC")
    assert [r["source"] for r in records] == ["mock", "x"]
    parsed = list(csv.DictReader(io.StringIO(state.tweets_csv(records).decode("utf-8-sig"))))
    assert [r["source"] for r in parsed] == ["mock", "x"]


@dataclass
class Row:
    id: str
    keyword: str
    created_at: datetime
    text: str
    label: str
    score: float
    source: str = "replay"
    engine: str = "vader"


def test_tweets_csv_round_trips_newlines_commas_and_accents():
    rows = [Row("1", "United", NOW, 'lost my bag,\n"again" — très déçu', "negative", -0.61234)]
    records = state.tweet_records(rows, "UTC")
    data = state.tweets_csv(records)
    assert data.startswith("\ufeff".encode())
    parsed = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert parsed[0]["text"] == 'lost my bag,\n"again" — très déçu'
    assert parsed[0]["score"] == "-0.612"
    assert parsed[0]["label"] == "negative"


def test_keywords_from_query_matches_tracked_ones_and_keeps_other_terms():
    known = ["Tesla", "United"]
    assert state.keywords_from_query(["tesla"], known) == (["Tesla"], [])
    assert state.keywords_from_query(["Tesla, united", "TESLA", " luggage ", ""], known) == (
        ["Tesla", "United"], ["luggage"])
    assert state.keywords_from_query([], known) == ([], [])
