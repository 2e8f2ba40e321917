"""The processor and the ingestor stopped mid-stream, then restarted: nothing lost, nothing duplicated.

- kill -9 of both at once, restarted in reverse order (the ingestor first, then the processor).
  (kill -9 of each one alone is tests/pipeline/test_end_to_end.py.)
- SIGTERM of each in turn: it finishes the batch in hand, commits, and exits 0 within seconds; the
  restarted stage then receives nothing twice, which shows the last batch's offsets were committed.
"""

from __future__ import annotations

import logging
import time

import pytest

from tests.faults.conftest import (
    INGESTOR_STOPPED,
    PROCESSOR_STOPPED,
    assert_exactly_once,
    fault_env,
    our_tracebacks,
    replay_args,
    stopped_line,
    stored,
    wait_rows,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]
logger = logging.getLogger(__name__)


def test_kill_9_both_stages_then_restart_in_reverse_order(pg_url, kafka_settings, airline_subset, stages):
    ids = airline_subset.ids
    env = fault_env(kafka_settings(database_url=pg_url))
    ingest = stages(["ingest"], env)
    process = stages(["process"], env)
    produce = stages(replay_args(airline_subset), env)

    wait_rows(pg_url, len(ids) // 4, timeout=90, what="a quarter of the tweets stored",
              stages=(ingest, process, produce))
    process.kill()  # SIGKILL both: batches in flight on both hops, uncommitted
    ingest.kill()
    killed_at = time.monotonic()
    rows_at_kill = stored(pg_url)[0]
    assert rows_at_kill < len(ids), "the stream finished before the stages were killed"
    assert produce.proc.poll() is None, "the producer finished before the stages were killed"

    time.sleep(1.0)
    assert stored(pg_url)[0] == rows_at_kill, "rows arrived with no ingestor running"
    ingest = stages(["ingest"], env)  # reverse order: the downstream stage first
    restarted_at = time.monotonic()
    first_progress = wait_rows(pg_url, rows_at_kill + 1, timeout=60, what="rows from the restarted ingestor",
                               stages=(ingest,))
    time.sleep(1.0)
    process = stages(["process"], env)
    assert produce.wait(90) == 0, produce.output()[-3000:]
    produced_at = time.monotonic()
    caught_up = wait_rows(pg_url, len(ids), timeout=90, what="every tweet after the restarts",
                          stages=(ingest, process))
    assert process.terminate() == 0, process.output()[-3000:]
    assert ingest.terminate() == 0, ingest.output()[-3000:]
    rows = assert_exactly_once(pg_url, ids)
    for stage in (ingest, process, produce):
        assert our_tracebacks(stage.output()) == 0, stage.output()[-3000:]
    # The restarted processor re-scored the batches in flight at the kill; the ingestor dropped them.
    received, inserted = map(int, stopped_line(ingest.output(), INGESTOR_STOPPED))
    logger.info("FIGURES kill-9-both: %s", {
        "rows": rows, "rows_at_kill": rows_at_kill, "down_s": round(restarted_at - killed_at, 2),
        "first_row_after_ingestor_restart_s": round(first_progress, 2),
        "all_rows_after_producer_done_s": round(caught_up, 2), "stream_end_after_restart_s":
            round(produced_at - restarted_at, 2),
        "restarted_ingestor_received": received, "restarted_ingestor_inserted": inserted,
    })


def _sigterm(stage) -> tuple[int, float]:
    t0 = time.monotonic()
    rc = stage.terminate(timeout=30)
    return rc, time.monotonic() - t0


def test_sigterm_mid_stream_finishes_the_batch_commits_and_exits_0(pg_url, kafka_settings, airline_subset,
                                                                   stages):
    ids = airline_subset.ids
    n = len(ids)
    env = fault_env(kafka_settings(database_url=pg_url))
    ingest = stages(["ingest"], env)
    process = stages(["process"], env)
    produce = stages(replay_args(airline_subset), env)

    wait_rows(pg_url, n // 4, timeout=90, what="a quarter of the tweets stored", stages=(ingest, process))
    rc, process_exit_s = _sigterm(process)
    assert rc == 0, process.output()[-3000:]
    assert process_exit_s < 10
    assert "received SIGTERM: stopping after the current batch" in process.output()
    first_processed, _ = map(int, stopped_line(process.output(), PROCESSOR_STOPPED))
    assert 0 < first_processed < n
    process = stages(["process"], env)

    at = stored(pg_url)[0]
    wait_rows(pg_url, at + n // 4, timeout=90, what="progress after the processor restart",
              stages=(ingest, process))
    rc, ingest_exit_s = _sigterm(ingest)
    assert rc == 0, ingest.output()[-3000:]
    assert ingest_exit_s < 10
    assert "received SIGTERM: stopping after the current batch" in ingest.output()
    first_received, first_inserted = map(int, stopped_line(ingest.output(), INGESTOR_STOPPED))
    # Everything it took was written before it exited (its batch was finished, not dropped).
    assert first_inserted == first_received == stored(pg_url)[0]
    rows_at_stop = first_inserted
    assert rows_at_stop < n, "the stream finished before the ingestor was stopped"
    ingest = stages(["ingest"], env)

    assert produce.wait(90) == 0, produce.output()[-3000:]
    wait_rows(pg_url, n, timeout=90, what="every tweet after the restarts", stages=(ingest, process))
    rc, _ = _sigterm(process)
    assert rc == 0
    rc, _ = _sigterm(ingest)
    assert rc == 0
    rows = assert_exactly_once(pg_url, ids)

    # Nothing was received twice: the offsets of each stopped stage's last batch were committed, so
    # its successor started right after it (a kill -9 would redeliver the batch in flight instead).
    second_processed, _ = map(int, stopped_line(process.output(), PROCESSOR_STOPPED))
    second_received, second_inserted = map(int, stopped_line(ingest.output(), INGESTOR_STOPPED))
    assert first_processed + second_processed == n
    assert first_received + second_received == n
    assert second_inserted == second_received
    logger.info("FIGURES sigterm: %s", {
        "rows": rows, "processor_exit_s": round(process_exit_s, 2),
        "ingestor_exit_s": round(ingest_exit_s, 2),
        "processed": [first_processed, second_processed], "ingested": [first_received, second_received],
    })
