"""Message contracts and text hygiene."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pipeline.contracts import AnalyzedTweet, DeadLetter, RawTweet, decode_analyzed, decode_raw, encode
from pipeline.errors import InvalidMessage
from pipeline.text import clean_text


def raw(**kw):
    base = dict(id="1", text="hello", created_at="2015-02-24T11:35:52-08:00", keyword="United",
                source="replay")
    base.update(kw)
    return base


def test_roundtrip_keeps_big_ids_and_converts_to_utc():
    tweet = RawTweet(**raw(id=570306133677760513))
    assert tweet.id == "570306133677760513"  # > 2**53: kept exact as a string
    assert tweet.created_at == datetime(2015, 2, 24, 19, 35, 52, tzinfo=UTC)
    again = decode_raw(encode(tweet))
    assert again == tweet
    assert json.loads(encode(tweet))["schema_version"] == 1


def test_missing_id_is_a_deterministic_hash():
    a = RawTweet(**raw(id=None))
    b = RawTweet(**raw(id=""))
    c = RawTweet(**raw(id=None, text="other"))
    assert a.id == b.id != c.id
    assert a.id.startswith("h")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not an object"),
        (json.dumps(raw(text=None)).encode(), "text"),
        (json.dumps({k: v for k, v in raw().items() if k != "text"}).encode(), "text"),
        (json.dumps(raw(created_at="yesterday")).encode(), "created_at"),
        (json.dumps(raw(source="carrier-pigeon")).encode(), "source"),
        (json.dumps({**raw(), "schema_version": 99}).encode(), "schema_version"),
        (json.dumps(raw(keyword="a\u202eb")).encode(), "keyword: .*U\\+202E"),
        (json.dumps(raw(keyword="Tes\u200bla")).encode(), "keyword: .*U\\+200B"),
        (json.dumps(raw(keyword="a\x00b")).encode(), "keyword: .*U\\+0000"),
        (json.dumps(raw(created_at=-5)).encode(), "created_at: .*1970-01-01..2199-12-31"),
        (json.dumps(raw(created_at="1969-12-31T23:59:59Z")).encode(), "created_at: .*outside"),
        (json.dumps(raw(created_at="2200-01-01T00:00:00Z")).encode(), "created_at: .*outside"),
    ],
)
def test_bad_payloads_raise_a_readable_reason(payload, reason):
    with pytest.raises(InvalidMessage, match=reason):
        decode_raw(payload)


def test_analyzed_contract_bounds():
    base = {**RawTweet(**raw()).model_dump(mode="json"), "label": "negative", "p_neg": 0.7,
            "p_neu": 0.2, "p_pos": 0.1, "score": -0.6, "engine": "vader",
            "processed_at": "2026-01-01T00:00:00Z"}
    assert decode_analyzed(json.dumps(base).encode()).score == -0.6
    with pytest.raises(InvalidMessage, match="score"):
        decode_analyzed(json.dumps({**base, "score": 3}).encode())
    with pytest.raises(InvalidMessage, match="label"):
        decode_analyzed(json.dumps({**base, "label": "angry"}).encode())
    assert isinstance(AnalyzedTweet.model_validate(base).processed_at.tzinfo, type(UTC))


def test_dead_letter_keeps_the_original_bytes():
    letter = DeadLetter.of(stage="processor", reason="payload is not UTF-8", payload=b"\xff\x00",
                           topic="raw_tweets", partition=3, offset=42, key="k")
    assert letter.payload == b"\xff\x00"
    assert DeadLetter.model_validate_json(encode(letter)).payload == b"\xff\x00"


def test_clean_text_rules():
    assert clean_text("a\x00b", max_chars=10) == "ab"
    assert clean_text("x\ud83dy", max_chars=10) == "x\ufffdy"
    assert clean_text("✈️🙂", max_chars=10) == "✈️🙂"
    with pytest.raises(InvalidMessage, match="empty"):
        clean_text(" \x00\n", max_chars=10)
    with pytest.raises(InvalidMessage, match="MAX_TEXT_CHARS"):
        clean_text("x" * 11, max_chars=10)
    assert len(clean_text("x" * 10_000, max_chars=10_000)) == 10_000


def test_created_at_bounds_are_inclusive_and_accents_are_fine_in_keywords():
    for stamp in ("1970-01-01T00:00:00Z", "2199-12-31T23:59:59Z"):
        assert decode_raw(json.dumps(raw(created_at=stamp)).encode()).created_at.year in (1970, 2199)
    assert decode_raw(json.dumps(raw(keyword="Café 🚀")).encode()).keyword == "Café 🚀"
