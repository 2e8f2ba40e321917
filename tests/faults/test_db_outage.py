"""PostgreSQL stopped for 10 s mid-stream (a throwaway cluster of the test's own, never the shared
server): the ingestor retries the same batch with backoff, one log line per attempt, without a crash,
resumes when the database is back, and every tweet is stored exactly once."""

from __future__ import annotations

import logging
import re
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

OUTAGE_SECONDS = 10.0
RETRY_LINE = re.compile(r"ingestor: write \d+ tweets \(.+\) failed \(attempt (\d+)\): (\w+)")


def test_postgres_down_10_s_mid_stream(throwaway_pg, kafka_settings, airline_subset, stages):
    ids = airline_subset.ids
    url = throwaway_pg.url
    env = fault_env(kafka_settings(database_url=url))
    ingest = stages(["ingest"], env)
    process = stages(["process"], env)
    produce = stages(replay_args(airline_subset), env)

    wait_rows(url, len(ids) // 4, timeout=90, what="a quarter of the tweets stored",
              stages=(ingest, process, produce))
    throwaway_pg.down()
    down_at = time.monotonic()
    time.sleep(OUTAGE_SECONDS)
    assert ingest.proc.poll() is None, f"the ingestor died with the database:\n{ingest.output()[-3000:]}"
    throwaway_pg.up()
    up_at = time.monotonic()
    rows_before = stored(url)[0]
    assert 0 < rows_before < len(ids), "the stream finished before the database came back"
    first_progress = wait_rows(url, rows_before + 1, timeout=60, what="rows after the database is back",
                               stages=(ingest, process))
    assert produce.wait(90) == 0, produce.output()[-3000:]
    produced_at = time.monotonic()
    caught_up = wait_rows(url, len(ids), timeout=90, what="every tweet after the outage",
                          stages=(ingest, process))
    assert process.terminate() == 0, process.output()[-3000:]
    assert ingest.terminate() == 0, ingest.output()[-3000:]
    rows = assert_exactly_once(url, ids)

    log = ingest.output()
    attempts = [int(a) for a, _ in RETRY_LINE.findall(log)]
    assert len(attempts) >= 3, f"expected retry lines while the database was down:\n{log[-3000:]}"
    assert re.search(r"ingestor: write \d+ tweets .* succeeded after \d+ attempts", log), log[-3000:]
    assert our_tracebacks(log) == 0, log[-3000:]
    delays = [float(d) for d in re.findall(r"ingestor: write .* retrying in ([\d.]+)s", log)]
    assert max(delays) > min(delays), "the retry delay never grew (no backoff)"
    logger.info("FIGURES postgres-down: %s", {
        "rows": rows, "outage_s": round(up_at - down_at, 2), "retry_lines": len(attempts),
        "max_attempt": max(attempts), "retry_delays_s": delays,
        "rows_when_back": rows_before, "first_row_after_up_s": round(first_progress, 2),
        "all_rows_after_up_s": round(produced_at + caught_up - up_at, 2),
    })
