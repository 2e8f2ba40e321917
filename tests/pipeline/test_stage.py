"""Stage lifecycle pieces (retry, batches, JSON logs) and `dead-letters list|replay` end to end."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest

from pipeline.bus.memory import MemoryBus
from pipeline.errors import ConfigError, StageStopped
from pipeline.logging_setup import configure_logging
from pipeline.stage import collect_batch, retry
from tests.pipeline.conftest import count_rows, stage_env


def test_retry_logs_one_line_per_failed_attempt_then_succeeds(make_settings, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.stage")
    settings = make_settings(retry_initial_backoff_seconds=0.01, retry_max_backoff_seconds=0.02)
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] < 4:
            raise ConnectionError(f"refused #{calls['n']}")
        return "ok"

    assert retry(flaky, what="connect to the thing", settings=settings, stop=threading.Event()) == "ok"
    lines = [r.getMessage() for r in caplog.records if "connect to the thing" in r.getMessage()]
    assert lines[:3] == [f"connect to the thing failed (attempt {i}): ConnectionError: refused #{i}; "
                         f"retrying in {lines[i - 1].rsplit(' ', 1)[1]}" for i in (1, 2, 3)]
    assert lines[3] == "connect to the thing succeeded after 4 attempts"


def test_retry_stops_on_the_stop_flag_and_gives_up_on_config_errors(make_settings):
    settings = make_settings(retry_initial_backoff_seconds=5)
    stop = threading.Event()
    stop.set()
    with pytest.raises(StageStopped):
        retry(lambda: 1 / 0, what="x", settings=settings, stop=stop)
    calls = []

    def bad_setting():
        calls.append(1)
        raise ConfigError("SOMETHING is wrong")

    with pytest.raises(ConfigError):
        retry(bad_setting, what="x", settings=settings, stop=threading.Event())
    assert len(calls) == 1


def test_collect_batch_honours_size_and_wait():
    bus = MemoryBus()
    consumer = bus.consumer(["t"], group_id="g")
    stop = threading.Event()
    assert collect_batch(consumer, max_records=10, max_wait_s=0.05, stop=stop, idle_poll_s=0.01) == []
    producer = bus.producer()
    for i in range(25):
        producer.send("t", key=str(i), value=b"v")
    sizes = [len(collect_batch(consumer, max_records=10, max_wait_s=0.05, stop=stop)) for _ in range(3)]
    assert sizes == [10, 10, 5]


def test_json_logs_are_one_object_per_line(make_settings):
    stream = io.StringIO()
    configure_logging(make_settings(log_json=True), stream=stream)
    try:
        logging.getLogger("pipeline.test").info("hello %s", "world")
    finally:
        configure_logging(make_settings())
    entry = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert entry["msg"] == "hello world" and entry["level"] == "INFO" and entry["logger"] == "pipeline.test"


def test_dead_letters_list_and_replay_on_the_embedded_bus(tmp_path, make_settings, sqlite_url, stages):
    path = tmp_path / "mixed.jsonl"
    rows = [{"id": "ok1", "text": "great flight", "keyword": "United"},
            {"id": "long1", "text": "bad " * 3000, "keyword": "United"},
            {"id": "empty1", "text": "   ", "keyword": "United"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    env = stage_env(make_settings(database_url=sqlite_url))
    run = stages(["run", "--source", "replay", "--file", str(path), "--no-ui", "--exit-when-done"], env)
    assert run.wait(120) == 0, run.output()[-3000:]
    assert count_rows(sqlite_url) == 1

    listing = stages(["dead-letters", "list", "--json"], env)
    assert listing.wait(60) == 0
    letters = [json.loads(line) for line in listing.output().splitlines() if line.startswith("{")]
    reasons = {letter["key"]: letter["reason"] for letter in letters}
    assert "MAX_TEXT_CHARS=10000" in reasons["long1"] and reasons["empty1"] == "text is empty"
    assert json.loads(next(x["payload"] for x in letters if x["key"] == "long1"))["id"] == "long1"

    # The fix: allow longer texts, then send the letters back. The empty one still fails, and says why.
    replay = stages(["dead-letters", "replay"], {**env, "MAX_TEXT_CHARS": "20000"})
    assert replay.wait(60) == 1
    out = replay.output()
    assert "replayed 1 dead letter(s); 1 still failing" in out and "still fails: text is empty" in out
    assert count_rows(sqlite_url, "select count(*) from tweets where id = 'long1'") == 1
    again = stages(["dead-letters", "list"], env)
    assert again.wait(60) == 0 and "1 dead letter(s)" in again.output()  # only the empty one is left
