"""kill -9 the broker mid-stream and restart it on the same port and storage: the stages reconnect
and finish, and every tweet is stored exactly once.

The broker is tansu on its s3:// storage engine against a local moto S3 server, so what it
acknowledged survives the kill (its memory:// engine would lose every topic and offset).
"""

from __future__ import annotations

import logging
import time

import pytest

from tests.faults.conftest import (
    assert_exactly_once,
    fault_env,
    our_tracebacks,
    replay_args,
    stored,
    wait_rows,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]
logger = logging.getLogger(__name__)

DOWN_SECONDS = 3.0


def test_broker_kill_9_mid_stream_then_restart_on_same_storage(durable_broker, pg_url, fault_settings,
                                                              airline_subset, stages):
    ids = airline_subset.ids
    settings = fault_settings(kafka_bootstrap_servers=durable_broker.bootstrap, database_url=pg_url)
    env = fault_env(settings)
    ingest = stages(["ingest"], env)
    process = stages(["process"], env)
    produce = stages(replay_args(airline_subset), env)

    wait_rows(pg_url, len(ids) // 4, timeout=90, what="a quarter of the tweets stored",
              stages=(ingest, process, produce))
    durable_broker.kill9()
    killed_at = time.monotonic()
    rows_at_kill = stored(pg_url)[0]
    assert rows_at_kill < len(ids), "the stream finished before the broker was killed"
    assert produce.proc.poll() is None, "the producer finished before the broker was killed"
    prefix = f"clusters/{durable_broker.cluster_id}/"
    objects = durable_broker.s3.objects(prefix)
    assert any("/records/" in key for key in objects), "tansu did not write its records to S3"

    time.sleep(DOWN_SECONDS)
    assert stored(pg_url)[0] - rows_at_kill < 500, "rows kept arriving with the broker down"
    durable_broker.start()
    restarted_at = time.monotonic()
    # Progress after the restart: stages reconnected to the same broker and found their offsets.
    first_progress = wait_rows(pg_url, stored(pg_url)[0] + 1, timeout=90, what="progress after the restart",
                               stages=(ingest, process, produce))
    assert produce.wait(120) == 0, produce.output()[-3000:]
    produced_at = time.monotonic()
    caught_up = wait_rows(pg_url, len(ids), timeout=120, what="every tweet after the broker restart",
                           stages=(ingest, process))
    assert process.terminate() == 0, process.output()[-3000:]
    assert ingest.terminate() == 0, ingest.output()[-3000:]
    rows = assert_exactly_once(pg_url, ids)

    logs = {"producer": produce.output(), "processor": process.output(), "ingestor": ingest.output()}
    for name, log in logs.items():
        assert our_tracebacks(log) == 0, f"{name} crashed:\n{log[-3000:]}"
    assert f"{len(ids)} tweets published" in logs["producer"]
    retries = {name: log.count("failed (attempt") for name, log in logs.items()}
    logger.info("FIGURES broker-restart: %s", {
        "rows": rows, "rows_at_kill": rows_at_kill, "s3_objects_at_kill": len(objects),
        "broker_down_s": round(restarted_at - killed_at, 2),
        "first_row_after_restart_s": round(first_progress, 2),
        "producer_done_after_restart_s": round(produced_at - restarted_at, 2),
        "all_rows_after_producer_done_s": round(caught_up, 2), "retry_lines": retries,
    })
