"""Replay defects a newcomer found: bad bytes, bad lines, bad timestamps and lone surrogates cost
only their own row (dead-lettered with a reason), and a paced replay keeps heartbeating."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from pipeline.bus.base import Record
from pipeline.bus.memory import MemoryBus
from pipeline.engines.vader import VaderEngine
from pipeline.processor import Processor
from pipeline.producers.replay import run_replay_producer


def replay_through_processor(path, settings) -> tuple[list, list]:
    """Replay `path` at max speed onto a MemoryBus and score what arrived: (tweets, dead letters)."""
    bus = MemoryBus()
    run_replay_producer(settings, bus=bus, db=None, stop=threading.Event(), file=path)
    consumer = bus.consumer([settings.raw_topic], group_id="check")
    records: list[Record] = []
    while batch := consumer.poll(max_records=10_000, timeout=0.05):
        records.extend(batch)
    return Processor(settings, bus=None, engine=VaderEngine(), db=None).analyze(records)


def test_lone_surrogate_goes_on_the_bus_and_becomes_a_replacement_character(tmp_path, make_settings):
    path = tmp_path / "s.jsonl"
    path.write_text('{"text": "lone \\ud83d surrogate", "keyword": "United"}\n'
                    '{"text": "fine", "keyword": "United"}\n', encoding="ascii")
    tweets, letters = replay_through_processor(path, make_settings())
    assert not letters
    assert sorted(t.text for t in tweets) == ["fine", "lone \ufffd surrogate"]


@pytest.mark.parametrize("value", ["1e20", "NaN", "-1e12", '"24/02/2015 11:39"', '"9999-99-99"'])
def test_unreadable_created_at_is_dead_lettered_not_now_and_the_rest_replayed(tmp_path, make_settings, value):
    path = tmp_path / "t.jsonl"
    path.write_text(f'{{"text": "bad time", "keyword": "K", "created_at": {value}}}\n'
                    '{"text": "good", "keyword": "K", "created_at": "2015-02-24T11:00:00Z"}\n',
                    encoding="utf-8")
    tweets, letters = replay_through_processor(path, make_settings())
    assert [t.text for t in tweets] == ["good"]
    assert len(letters) == 1 and "created_at" in letters[0].reason


def test_common_timestamp_formats_parse(tmp_path, make_settings):
    path = tmp_path / "f.csv"
    path.write_text("id,created_at,keyword,text\n"
                    "1,Tue Feb 24 11:40:00 +0000 2015,K,v1\n"
                    "2,1424800000,K,epoch seconds\n"
                    "3,1424800000000,K,epoch ms\n"
                    "4,2015-02-24 11:35:52 -0800,K,airline\n"
                    "5,,K,missing\n", encoding="utf-8")
    before = datetime.now(UTC)
    tweets, letters = replay_through_processor(path, make_settings())
    assert not letters
    got = {t.id: t.created_at for t in tweets}
    assert got["1"] == datetime(2015, 2, 24, 11, 40, tzinfo=UTC)
    assert got["2"] == got["3"] == datetime.fromtimestamp(1424800000, UTC)
    assert got["4"] == datetime(2015, 2, 24, 19, 35, 52, tzinfo=UTC)
    assert got["5"] >= before  # only a MISSING created_at becomes the replay time


def test_non_utf8_and_non_json_jsonl_lines_are_dead_lettered_the_rest_stored(tmp_path, make_settings):
    path = tmp_path / "b.jsonl"
    path.write_bytes(b'{"text": "one", "keyword": "K"}\n'
                     b'{"text": "caf\xe9", "keyword": "K"}\n'
                     b'this is not json\n'
                     b'[1, 2]\n'
                     b'{"text": "two", "keyword": "K"}\n')
    tweets, letters = replay_through_processor(path, make_settings())
    assert sorted(t.text for t in tweets) == ["one", "two"]
    reasons = sorted(letter.reason for letter in letters)
    assert len(reasons) == 3
    assert any("not UTF-8" in r for r in reasons) and sum("not JSON" in r for r in reasons) == 1
    assert {letter.payload for letter in letters} == {b'{"text": "caf\xe9", "keyword": "K"}',
                                                      b"this is not json", b"[1, 2]"}


def test_non_utf8_csv_row_is_dead_lettered_with_its_raw_bytes(tmp_path, make_settings):
    path = tmp_path / "b.csv"
    path.write_bytes(b"id,keyword,text\n1,K,good one\n2,K,caf\xe9 bad\n3,K,\"multi\nline\"\n")
    tweets, letters = replay_through_processor(path, make_settings())
    assert sorted(t.text for t in tweets) == ["good one", "multi\nline"]
    assert len(letters) == 1 and "not UTF-8" in letters[0].reason
    assert letters[0].payload == b"2,K,caf\xe9 bad"


def test_paced_replay_keeps_heartbeating_while_waiting(tmp_path, make_settings, sqlite_url):
    from db.database import open_database
    from db.queries import heartbeats

    path = tmp_path / "gap.jsonl"
    path.write_text('{"text": "a", "keyword": "K", "created_at": "2015-01-01T00:00:00Z"}\n'
                    '{"text": "b", "keyword": "K", "created_at": "2015-01-01T01:00:00Z"}\n',
                    encoding="utf-8")
    settings = make_settings(database_url=sqlite_url, heartbeat_interval_seconds=0.2)
    db = open_database(settings)
    stop = threading.Event()
    thread = threading.Thread(target=run_replay_producer, kwargs=dict(
        settings=settings, bus=MemoryBus(), db=db, stop=stop, file=path, speed="1"), daemon=True)
    thread.start()
    try:
        time.sleep(0.8)  # first tweet sent, now waiting an hour for the second

        def newest():
            rows = [h for h in heartbeats(db) if h.stage == "producer-replay"]
            return max(h.last_seen for h in rows) if rows else None

        first = newest()
        time.sleep(1.0)
        later = newest()
        assert first is not None and later is not None and later > first
    finally:
        stop.set()
        thread.join(10)
        db.engine.dispose()
