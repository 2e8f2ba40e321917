"""The mock and replay producers: drift, runtime keywords, replay order, columns, pacing, retime."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.bus.memory import MemoryBus
from pipeline.contracts import decode_raw
from pipeline.engines.vader import VaderEngine
from pipeline.errors import ConfigError
from pipeline.producers.mock import MockGenerator, mix_for, parse_drift, run_mock_producer
from pipeline.producers.replay import read_rows, replay_tweets, run_replay_producer


def drain(bus: MemoryBus, topic: str) -> list:
    consumer = bus.consumer([topic], group_id="check")
    out = []
    while batch := consumer.poll(max_records=10_000, timeout=0.05):
        out.extend(batch)
    return out


# --- mock ------------------------------------------------------------------------------------------

def test_drift_script_parses_and_rejects_nonsense():
    (d,) = parse_drift("Tesla:-0.8@60+120")
    assert (d.keyword, d.bias, d.start_s, d.duration_s) == ("Tesla", -0.8, 60.0, 120.0)
    assert len(parse_drift("A:0.5@0+10; B:-1@5+5")) == 2
    for bad in ("Tesla", "Tesla:-2@0+1", "Tesla:-0.5@x+1"):
        with pytest.raises(ConfigError, match="MOCK_DRIFT"):
            parse_drift(bad)


def test_drift_shifts_only_its_keyword_only_in_its_window():
    drifts = parse_drift("tesla:-0.8@60+120")
    assert mix_for("Tesla", 10, drifts) == mix_for("Apple", 100, drifts)
    burst = mix_for("TESLA", 100, drifts)  # case-insensitive
    assert burst["negative"] == pytest.approx(0.3 + 0.8 * 0.7)
    assert sum(burst.values()) == pytest.approx(1.0)
    assert mix_for("Tesla", 181, drifts)["negative"] == pytest.approx(0.3)


def test_mock_tweets_read_as_their_intended_sentiment(make_settings):
    now = {"t": 0.0}
    gen = MockGenerator(make_settings(mock_drift="Tesla:-1@10+10"), rng=random.Random(7),
                        clock=lambda: now["t"])
    vader = VaderEngine()
    calm = [gen.tweet("Tesla") for _ in range(300)]
    now["t"] = 15.0
    burst = [gen.tweet("Tesla") for _ in range(300)]
    assert all("Tesla" in t.text and t.source == "mock" and t.lang == "en" for t in calm + burst)
    assert len({t.id for t in calm + burst}) == 600
    assert len({t.text for t in calm}) > 100  # varied, not one template
    neg_calm = sum(s.label == "negative" for s in vader.classify([t.text for t in calm])) / 300
    neg_burst = sum(s.label == "negative" for s in vader.classify([t.text for t in burst])) / 300
    assert 0.15 < neg_calm < 0.5 and neg_burst > 0.85


def test_mock_picks_up_keywords_added_at_run_time(make_settings, sqlite_url, monkeypatch):
    import pipeline.producers.base as base
    from db.database import open_database
    from db.writes import add_keyword

    settings = make_settings(database_url=sqlite_url, keywords="Tesla", mock_rate=400)
    db = open_database(settings)
    bus, stop = MemoryBus(), threading.Event()
    thread = threading.Thread(target=run_mock_producer, args=(settings,),
                              kwargs=dict(bus=bus, db=db, stop=stop), daemon=True)
    monkeypatch.setattr(base, "KEYWORD_REFRESH_SECONDS", 0.05)
    try:
        thread.start()
        time.sleep(0.5)
        add_keyword(db, "Rivian")
        add_keyword(db, "tesla")  # the same keyword in another case: not a second one
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(10)
    keywords = [decode_raw(r.value).keyword for r in drain(bus, settings.raw_topic)]
    assert set(keywords) == {"Tesla", "Rivian"}
    assert keywords[0] == "Tesla" and keywords.count("Rivian") > 20


# --- replay ----------------------------------------------------------------------------------------

def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_replay_sorts_by_time_maps_labels_and_uses_configured_columns(tmp_path, make_settings):
    path = write_jsonl(tmp_path / "export.jsonl", [
        {"body": "second", "ts": "2015-02-24T11:00:01-08:00", "brand": "Delta", "sentiment": "POS"},
        {"body": "first", "ts": "2015-02-24T11:00:00-08:00", "sentiment": "negative", "tweet_id": 5},
        {"body": "no time", "sentiment": "2?"},
    ])
    settings = make_settings(replay_text_column="body", replay_created_at_column="ts",
                             replay_keyword_column="brand", replay_label_column="sentiment",
                             replay_id_column="tweet_id", keywords="Fallback")
    rows = read_rows(path, settings)
    assert [r.text for r in rows] == ["first", "second", "no time"]
    tweets = list(replay_tweets(rows, settings, threading.Event(), speed=None, keyword="Fallback"))
    assert [t.keyword for t in tweets] == ["Fallback", "Delta", "Fallback"]
    assert [t.gold_label for t in tweets] == ["negative", "positive", None]
    assert tweets[0].id == "5" and tweets[0].created_at == datetime(2015, 2, 24, 19, 0, tzinfo=UTC)
    again = list(replay_tweets(read_rows(path, settings), settings, threading.Event(), speed=None,
                               keyword="Fallback"))
    assert [t.id for t in again] == [t.id for t in tweets]  # derived ids are deterministic


def test_replay_without_text_column_is_a_clear_error(tmp_path, make_settings):
    path = tmp_path / "x.csv"
    path.write_text("id,message\n1,hello\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="REPLAY_TEXT_COLUMN"):
        read_rows(path, make_settings())


def test_replay_paces_by_original_spacing_times_speed(tmp_path, make_settings):
    base = datetime(2020, 1, 1, tzinfo=UTC)
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"text": f"t{i}", "created_at": (base + timedelta(seconds=i)).isoformat()} for i in range(4)])
    settings = make_settings()
    started = time.monotonic()
    list(replay_tweets(read_rows(path, settings), settings, threading.Event(), speed=10.0, keyword="K"))
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 1.5  # 3 s of original spacing at 10x


def test_retime_anchor_is_persisted_so_a_restart_resends_the_same_tweets(tmp_path, make_settings, sqlite_url):
    from db.database import open_database

    base = datetime(2015, 2, 24, 10, tzinfo=UTC)
    path = write_jsonl(tmp_path / "r.jsonl", [
        {"id": str(i), "text": f"t{i}", "created_at": (base + timedelta(minutes=i)).isoformat(),
         "keyword": "United"} for i in range(5)])
    settings = make_settings(database_url=sqlite_url)
    db = open_database(settings)
    runs = []
    for _ in range(2):
        bus = MemoryBus()
        before = datetime.now(UTC)
        assert run_replay_producer(settings, bus=bus, db=db, stop=threading.Event(), file=path, speed="max",
                                   retime=True) == 5
        runs.append([decode_raw(r.value) for r in drain(bus, settings.raw_topic)])
        if len(runs) == 1:
            first_created = runs[0][0].created_at
            assert before - timedelta(seconds=1) <= first_created <= datetime.now(UTC)
    assert [(t.id, t.created_at) for t in runs[0]] == [(t.id, t.created_at) for t in runs[1]]
    assert runs[0][4].created_at - runs[0][0].created_at == timedelta(minutes=4)  # spacing kept
    plain = MemoryBus()
    run_replay_producer(settings, bus=plain, db=db, stop=threading.Event(), file=path)
    assert decode_raw(drain(plain, settings.raw_topic)[0].value).created_at == base  # default: original


def test_rows_without_created_at_get_the_same_timestamp_when_the_file_is_replayed_again(
        tmp_path, make_settings, sqlite_url):
    from db.database import open_database

    path = write_jsonl(tmp_path / "untimed.jsonl", [
        {"id": "7", "text": "no time", "keyword": "United"},
        {"id": "8", "text": "timed", "keyword": "United", "created_at": "2015-02-24T10:00:00Z"},
        {"id": "9", "text": "no time either", "keyword": "United"}])
    settings = make_settings(database_url=sqlite_url)
    db = open_database(settings)
    runs = []
    for _ in range(2):
        bus = MemoryBus()
        before = datetime.now(UTC)
        run_replay_producer(settings, bus=bus, db=db, stop=threading.Event(), file=path)
        sent = [decode_raw(r.value) for r in drain(bus, settings.raw_topic)]
        runs.append({t.id: t.created_at for t in sent})
        time.sleep(0.05)
    assert runs[0] == runs[1]  # the (id, keyword, created_at) key repeats: an idempotent no-op in the DB
    assert runs[0]["8"] == datetime(2015, 2, 24, 10, tzinfo=UTC)
    assert runs[0]["9"] - runs[0]["7"] == timedelta(seconds=2)  # anchor + row number, distinct
    assert before - timedelta(minutes=1) < runs[0]["7"] < datetime.now(UTC) + timedelta(minutes=1)
    db.engine.dispose()


def test_invalid_replay_rows_are_sent_on_to_be_dead_lettered(tmp_path, make_settings):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "fine", "keyword": "United"}, {"text": None}])
    bus = MemoryBus()
    sent = run_replay_producer(make_settings(), bus=bus, db=None, stop=threading.Event(), file=path)
    assert sent == 2
    records = drain(bus, "raw_tweets")
    assert decode_raw(records[0].value).text == "fine"
    assert json.loads(records[1].value)["text"] is None  # the processor dead-letters it with the reason
