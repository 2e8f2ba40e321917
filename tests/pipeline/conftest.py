"""Helpers for pipeline tests: stages in threads, stages as `python -m pipeline` subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import ROOT

# Short intervals for stage subprocesses (the same values make_settings uses in-process).
FAST_ENV = {
    "SENTIMENT_ENGINE": "vader",
    "BATCH_WAIT_MS": "50",
    "INGEST_BATCH_WAIT_MS": "50",
    "HEARTBEAT_INTERVAL_SECONDS": "0.5",
    "KAFKA_SESSION_TIMEOUT_MS": "2000",
    "KAFKA_ENABLE_IDEMPOTENCE": "false",  # tansu quirk: see pipeline/bus/kafka.py
    "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
    "KAFKA_REQUEST_TIMEOUT_MS": "5000",
    "RETRY_INITIAL_BACKOFF_SECONDS": "0.2",
    "RETRY_MAX_BACKOFF_SECONDS": "1",
    "ALERTS_ENABLED": "false",
    "LOG_LEVEL": "INFO",
}


def stage_env(settings, **extra: str) -> dict[str, str]:
    """Environment for a stage subprocess that sees the same bus, topics, groups and DB as `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_"))}
    env.update(FAST_ENV)
    env.update({
        "DATABASE_URL": settings.database_url,
        "RAW_TOPIC": settings.raw_topic,
        "ANALYZED_TOPIC": settings.analyzed_topic,
        "DEAD_LETTER_TOPIC": settings.dead_letter_topic,
        "PROCESSOR_GROUP_ID": settings.processor_group_id,
        "INGESTOR_GROUP_ID": settings.ingestor_group_id,
        "KAFKA_PARTITIONS": str(settings.kafka_partitions),
        "PYTHONUNBUFFERED": "1",
    })
    if settings.kafka_bootstrap_servers:
        env["KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    env.update(extra)
    return env


class Stage:
    """A `python -m pipeline ...` subprocess whose output goes to a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.log = log
        self._fh = log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=env,
                                     stdout=self._fh, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"{self.args} still running after {timeout} s:\n{self.output()[-3000:]}") \
                from exc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.wait(timeout)

    def close(self) -> None:
        self.kill()
        self._fh.close()


@pytest.fixture
def stages(tmp_path):
    """Start stage subprocesses: `stages(["process"], env)`; all are killed after the test."""
    started: list[Stage] = []
    counter = iter(range(1000))

    def start(args: list[str], env: dict[str, str]) -> Stage:
        stage = Stage(args, env, tmp_path / f"{next(counter):02d}-{args[0]}.log")
        started.append(stage)
        return stage

    yield start
    for stage in started:
        stage.close()


@pytest.fixture
def in_thread():
    """Run `target(stop)` in a thread; stopped and joined after the test."""
    running: list[tuple[threading.Thread, threading.Event]] = []

    def start(target: Callable[[threading.Event], object]) -> threading.Event:
        stop = threading.Event()
        thread = threading.Thread(target=target, args=(stop,), daemon=True)
        thread.start()
        running.append((thread, stop))
        return stop

    yield start
    for _, stop in running:
        stop.set()
    for thread, _ in running:
        thread.join(30)
        assert not thread.is_alive(), "a stage thread did not stop within 30 s"


def wait_for(predicate: Callable[[], object], *, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def count_rows(url: str, sql: str = "select count(*) from tweets") -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar() or 0
    except sa.exc.SQLAlchemyError:
        return 0
    finally:
        engine.dispose()


def raw_payload(i: int, **over) -> bytes:
    data = {"id": f"t{i}", "text": f"I love this airline, flight {i} was great", "keyword": "United",
            "created_at": datetime(2026, 1, 1, 12, 0, i % 60, tzinfo=UTC).isoformat(), "source": "replay"}
    data.update(over)
    return json.dumps(data).encode()


BAD_PAYLOADS: dict[str, tuple[bytes, str]] = {
    "malformed-json": (b'{"id": "b1", "text": ', "not JSON"),
    "not-utf8": (b"\xff\xfe\x00garbage", "not UTF-8"),
    "missing-text": (json.dumps({"id": "b3", "keyword": "United", "source": "x",
                                 "created_at": "2026-01-01T00:00:00Z"}).encode(), "text"),
    "empty-text": (raw_payload(4, id="b4", text="  \n "), "text is empty"),
    "huge-text": (raw_payload(5, id="b5", text="x" * 100_000), "MAX_TEXT_CHARS"),
    "wrong-types": (raw_payload(6, id="b6", text=["not", "a", "string"], created_at=12.5e99),
                    "invalid RawTweet"),
    "json-array": (b"[1, 2, 3]", "not an object"),
}
