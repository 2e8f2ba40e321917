"""Faults at the process level: a broker that is down when a stage starts, a database that is down
when `ingest` starts, bad messages on raw_tweets in a running stream, and clean stops on SIGTERM."""

from __future__ import annotations

import re

from pipeline.bus.kafka import KafkaBus
from tests.pipeline.conftest import BAD_PAYLOADS, count_rows, raw_payload, stage_env, wait_for


def attempts(output: str, what: str) -> list[str]:
    pattern = re.compile(r"failed \(attempt \d+\)")
    return [line for line in output.splitlines() if what in line and pattern.search(line)]


def test_broker_down_at_start_retries_with_a_log_line_per_attempt_then_resumes(kafka_broker, make_settings,
                                                                              sqlite_url, stages):
    kafka_broker.stop()
    settings = make_settings(kafka_bootstrap_servers=kafka_broker.bootstrap, database_url=sqlite_url,
                             kafka_partitions=2)
    env = stage_env(settings, KAFKA_REQUEST_TIMEOUT_MS="2000")
    process = stages(["process"], env)
    ingest = stages(["ingest"], env)
    try:
        wait_for(lambda: len(attempts(process.output(), "processor: create topics")) >= 2
                 and len(attempts(ingest.output(), "ingestor: create topics")) >= 2,
                 timeout=90, what="two logged attempts by each stage")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nprocess:\n{process.output()[-2000:]}\ningest:\n"
                             f"{ingest.output()[-2000:]}") from None
    line = attempts(process.output(), "processor: create topics")[0]
    assert kafka_broker.bootstrap in line and "retrying in" in line
    assert process.proc.poll() is None and ingest.proc.poll() is None  # waiting, not crash-looping

    kafka_broker.start()
    bus = KafkaBus(settings)
    bus.ensure_topics([settings.raw_topic])
    producer = bus.producer()
    for i in range(100):
        producer.send(settings.raw_topic, key=f"t{i}", value=raw_payload(i))
    producer.flush()
    producer.close()
    wait_for(lambda: count_rows(sqlite_url) == 100, timeout=120, what="100 rows once the broker is up")
    assert "succeeded after" in process.output()
    assert process.terminate() == 0 and ingest.terminate() == 0


def test_database_down_at_start_of_ingest(throwaway_pg, kafka_settings, stages):
    throwaway_pg.down()
    settings = kafka_settings(database_url=throwaway_pg.url)
    ingest = stages(["ingest"], stage_env(settings))
    wait_for(lambda: len(attempts(ingest.output(), "connect to database")) >= 2, timeout=60,
             what="two logged database attempts")
    first = attempts(ingest.output(), "connect to database")[0]
    assert "postgresql+psycopg2://postgres@127.0.0.1" in first and "retrying in" in first
    assert ingest.proc.poll() is None
    throwaway_pg.up()
    wait_for(lambda: "ingestor started" in ingest.output(), timeout=60, what="the ingestor to start")
    assert ingest.terminate() == 0


def test_bad_messages_mid_stream_are_dead_lettered_and_the_stream_goes_on(kafka_settings, pg_url, stages):
    settings = kafka_settings(database_url=pg_url)
    env = stage_env(settings)
    process, ingest = stages(["process"], env), stages(["ingest"], env)
    bus = KafkaBus(settings)
    bus.ensure_topics([settings.raw_topic])
    producer = bus.producer()
    for i in range(60):
        producer.send(settings.raw_topic, key=f"t{i}", value=raw_payload(i))
        if i == 30:
            for payload, _ in BAD_PAYLOADS.values():
                producer.send(settings.raw_topic, key="bad", value=payload)
    producer.flush()
    producer.close()
    wait_for(lambda: count_rows(pg_url) == 60, timeout=120, what="the 60 good tweets stored")
    wait_for(lambda: count_rows(pg_url, "select count(*) from dead_letters") == len(BAD_PAYLOADS),
             timeout=60, what="every bad message in dead_letters")
    assert process.proc.poll() is None and ingest.proc.poll() is None
    assert process.terminate() == 0 and ingest.terminate() == 0


def test_process_and_ingest_need_kafka_and_say_so(make_settings, sqlite_url, stages):
    env = stage_env(make_settings(database_url=sqlite_url))
    for command in ("process", "ingest", "produce"):
        args = [command] + (["--source", "mock"] if command == "produce" else [])
        stage = stages(args, env)
        assert stage.wait(60) == 2
        assert "needs KAFKA_BOOTSTRAP_SERVERS" in stage.output() and "pipeline run" in stage.output()


def test_run_stops_cleanly_on_sigterm(make_settings, sqlite_url, stages):
    env = stage_env(make_settings(database_url=sqlite_url), MOCK_RATE="200")
    run = stages(["run", "--source", "mock", "--no-ui", "--keywords", "Tesla,Apple"], env)
    wait_for(lambda: count_rows(sqlite_url) > 50, timeout=60, what="mock tweets stored")
    assert run.terminate(timeout=30) == 0, run.output()[-3000:]
    out = run.output()
    assert "stopping: producer first" in out and "ingestor stopped" in out and "processor stopped" in out
    n = count_rows(sqlite_url)
    keywords = count_rows(sqlite_url, "select count(distinct keyword) from tweets")
    assert keywords == 2 and n > 50
