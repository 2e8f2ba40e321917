"""End to end with the real airline file: producer -> broker -> processor -> broker -> ingestor ->
PostgreSQL, each stage its own `python -m pipeline` process; the same through `pipeline run --no-ui`
on SQLite; and kill -9 of the processor and the ingestor mid-stream."""

from __future__ import annotations

import csv
import time

import sqlalchemy as sa

from tests.pipeline.conftest import count_rows, stage_env, wait_for

DISTINCT_IDS = 14_485
AIRLINES = {"United", "US Airways", "American", "Southwest", "JetBlue", "Virgin America"}


def expected(airline_csv) -> dict[str, tuple[str, set[str]]]:
    """id -> (keyword, the labels the file gives it; 18 ids repeat with conflicting labels)."""
    out: dict[str, tuple[str, set[str]]] = {}
    with airline_csv.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            kw, labels = out.get(row["id"], (row["keyword"], set()))
            labels.add(row["label"])
            out[row["id"]] = (kw, labels)
    return out


def assert_stored_exactly_once(url: str, airline_csv) -> None:
    want = expected(airline_csv)
    assert len(want) == DISTINCT_IDS
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        total, distinct = conn.execute(sa.text("select count(*), count(distinct id) from tweets")).one()
        sql = "select id, keyword, label, gold_label, source, engine from tweets"
        rows = conn.execute(sa.text(sql)).all()
    engine.dispose()
    assert (total, distinct) == (DISTINCT_IDS, DISTINCT_IDS)
    for tweet_id, keyword, label, gold, source, engine_name in rows:
        kw, labels = want[tweet_id]
        assert keyword == kw and keyword in AIRLINES
        assert gold in labels
        assert label in ("negative", "neutral", "positive")
        assert source == "replay" and engine_name == "vader"


def test_kafka_path_each_stage_its_own_process(airline_csv, pg_url, kafka_settings, stages):
    settings = kafka_settings(database_url=pg_url)
    env = stage_env(settings)
    ingest = stages(["ingest"], env)
    process = stages(["process"], env)
    produce = stages(["produce", "--source", "replay", "--file", str(airline_csv), "--speed", "max"], env)
    assert produce.wait(120) == 0, produce.output()[-3000:]
    wait_for(lambda: count_rows(pg_url) >= DISTINCT_IDS, timeout=240, what="14,485 rows in PostgreSQL")
    time.sleep(1.0)  # anything still in flight would show up as an extra row
    assert process.terminate() == 0, process.output()[-3000:]
    assert ingest.terminate() == 0, ingest.output()[-3000:]
    assert_stored_exactly_once(pg_url, airline_csv)
    assert "14640 tweets published" in produce.output()


def test_pipeline_run_no_ui_on_sqlite(airline_csv, sqlite_url, make_settings, stages):
    env = stage_env(make_settings(database_url=sqlite_url))
    run = stages(["run", "--source", "replay", "--file", str(airline_csv), "--no-ui", "--exit-when-done"],
                 env)
    assert run.wait(240) == 0, run.output()[-3000:]
    assert "replay done and everything stored" in run.output()
    assert_stored_exactly_once(sqlite_url, airline_csv)


def test_kill_9_processor_and_ingestor_mid_stream_loses_and_duplicates_nothing(airline_csv, pg_url,
                                                                                 kafka_settings, stages):
    # Small batches keep the stream going long enough to kill stages in the middle of it.
    settings = kafka_settings(database_url=pg_url)
    env = stage_env(settings, BATCH_SIZE="16", INGEST_BATCH_SIZE="50")
    ingest = stages(["ingest"], env)
    process = stages(["process"], env)
    produce = stages(["produce", "--source", "replay", "--file", str(airline_csv), "--speed", "max"], env)

    wait_for(lambda: count_rows(pg_url) >= 1500, timeout=120, what="the stream under way")
    process.kill()  # SIGKILL: no clean shutdown, the batch in flight is not committed
    assert count_rows(pg_url) < DISTINCT_IDS, "the stream finished before the processor was killed"
    process = stages(["process"], env)

    at = count_rows(pg_url)
    wait_for(lambda: count_rows(pg_url) >= at + 2000, timeout=120, what="progress after the restart")
    ingest.kill()
    assert count_rows(pg_url) < DISTINCT_IDS, "the stream finished before the ingestor was killed"
    ingest = stages(["ingest"], env)

    assert produce.wait(120) == 0, produce.output()[-3000:]
    wait_for(lambda: count_rows(pg_url) >= DISTINCT_IDS, timeout=300, what="every row after the restarts")
    time.sleep(1.0)
    assert process.terminate() == 0
    assert ingest.terminate() == 0
    assert_stored_exactly_once(pg_url, airline_csv)


def test_pipeline_run_on_kafka_when_configured(tmp_path, kafka_settings, sqlite_url, stages):
    import json

    path = tmp_path / "small.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "text": f"flight {i} was great", "keyword": "Delta",
                                        "label": "positive"}) + "\n" for i in range(300))
                    + json.dumps({"id": "e", "text": "", "keyword": "Delta"}) + "\n", encoding="utf-8")
    env = stage_env(kafka_settings(database_url=sqlite_url))
    run = stages(["run", "--source", "replay", "--file", str(path), "--no-ui", "--exit-when-done"], env)
    assert run.wait(120) == 0, run.output()[-3000:]
    assert "Kafka 127.0.0.1:" in run.output()
    assert count_rows(sqlite_url) == 300
    assert count_rows(sqlite_url, "select count(*) from dead_letters") == 1  # via the dead-letter topic
