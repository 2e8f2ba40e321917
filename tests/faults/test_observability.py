"""Observability of the stage processes: JSON log lines (LOG_JSON=true), a throughput line every
THROUGHPUT_LOG_SECONDS from the processor and the ingestor, and `python -m pipeline health --stage`
exiting 0 for a live stage and 1 once it is dead.

One run of real tweets through separate processes feeds all the checks (they share its logs)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime

import pytest

from tests.conftest import ROOT
from tests.faults.conftest import fault_env, replay_args, wait_rows

THROUGHPUT_SECONDS = 0.5
THROUGHPUT = re.compile(r"^(processor|ingestor|producer-replay): (\d+) in \d+s \(([\d.]+)/s\), (\d+) total")


def health(stage: str, env: dict[str, str], max_age: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", "health", "--stage", stage, "--max-age",
                           str(max_age)], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def observed(request, tmp_path_factory, airline_subset, pg_server_url, kafka_bootstrap):
    """Run producer, processor and ingestor with LOG_JSON=true on the subset; health-check each
    stage while it runs and again after it stopped. Returns the logs and the health results."""
    from pipeline.settings import Settings
    from tests.fixtures.postgres import create_database, drop_database
    from tests.pipeline.conftest import Stage

    url = create_database(pg_server_url)
    tag = tmp_path_factory.mktemp("observed").name[-8:]
    settings = Settings(_env_file=None, kafka_bootstrap_servers=kafka_bootstrap, database_url=url,
                        raw_topic=f"raw-obs-{tag}", analyzed_topic=f"analyzed-obs-{tag}",
                        dead_letter_topic=f"dead-obs-{tag}", processor_group_id=f"proc-obs-{tag}",
                        ingestor_group_id=f"ing-obs-{tag}", kafka_partitions=3)
    env = fault_env(settings, LOG_JSON="true", THROUGHPUT_LOG_SECONDS=str(THROUGHPUT_SECONDS))
    logs = tmp_path_factory.mktemp("observed-logs")
    started = []
    try:
        ingest = Stage(["ingest"], env, logs / "ingest.log")
        process = Stage(["process"], env, logs / "process.log")
        produce = Stage(replay_args(airline_subset, paced=False), env, logs / "produce.log")
        started = [ingest, process, produce]
        wait_rows(url, 500, timeout=90, what="tweets flowing", stages=(ingest, process))
        live = {stage: health(stage, env, max_age=5) for stage in ("processor", "ingestor")}
        assert produce.wait(90) == 0, produce.output()[-3000:]
        wait_rows(url, len(airline_subset.ids), timeout=90, what="every tweet", stages=(ingest, process))
        rc = {"processor": process.terminate(), "ingestor": ingest.terminate()}
        time.sleep(2.5)  # older than --max-age 2: the heartbeat rows of the stopped stages are stale
        dead = {stage: health(stage, env, max_age=2) for stage in ("processor", "ingestor")}
        return {"logs": {"processor": process.output(), "ingestor": ingest.output(),
                         "producer": produce.output()},
                "live": live, "dead": dead, "rc": rc}
    finally:
        for stage in started:
            stage.close()
        drop_database(pg_server_url, url)


def json_lines(log: str) -> list[dict]:
    out = []
    for line in log.splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"not a JSON log line: {line[:300]!r}") from exc
        assert isinstance(entry, dict), line
        out.append(entry)
    return out


@pytest.mark.parametrize("stage", ["processor", "ingestor", "producer"])
def test_log_json_makes_every_line_a_json_object(observed, stage):
    entries = json_lines(observed["logs"][stage])
    assert len(entries) >= 5
    for entry in entries:
        assert {"ts", "level", "logger", "msg"} <= entry.keys(), entry
        datetime.fromisoformat(entry["ts"])
        assert entry["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    assert any(e["msg"].startswith(f"{stage} stopped") or "stopped:" in e["msg"] for e in entries)


@pytest.mark.parametrize("stage", ["processor", "ingestor"])
def test_throughput_is_logged_every_interval(observed, stage):
    lines = [(datetime.fromisoformat(e["ts"]), THROUGHPUT.match(e["msg"]))
             for e in json_lines(observed["logs"][stage])]
    lines = [(ts, m) for ts, m in lines if m and m.group(1) == stage]
    assert len(lines) >= 3, f"too few throughput lines from the {stage}"
    totals = [int(m.group(4)) for _, m in lines]
    assert totals == sorted(totals) and totals[-1] >= 3000
    assert any(float(m.group(3)) > 0 for _, m in lines), "no line shows a rate while tweets flowed"
    gaps = [(b - a).total_seconds() for (a, _), (b, _) in zip(lines, lines[1:], strict=False)]
    # Periodic lines (the last one is forced at shutdown): at the interval, never far beyond it.
    assert min(gaps[:-1] or gaps) >= THROUGHPUT_SECONDS * 0.9
    assert sorted(gaps)[len(gaps) // 2] < THROUGHPUT_SECONDS * 4


@pytest.mark.parametrize("stage", ["processor", "ingestor"])
def test_health_exits_0_while_the_stage_lives_and_1_once_it_is_dead(observed, stage):
    live, dead = observed["live"][stage], observed["dead"][stage]
    assert live.returncode == 0, live.stdout + live.stderr
    assert live.stdout.startswith("OK ") and "healthy" in live.stdout
    assert observed["rc"][stage] == 0
    assert dead.returncode == 1, dead.stdout + dead.stderr
    # Stopped by SIGTERM, the stage marked its row "stopped" on the way out.
    assert dead.stdout.startswith("UNHEALTHY ") and "not running, stopped at" in dead.stdout
