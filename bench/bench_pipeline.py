"""Pipeline benchmark: `python -m bench.bench_pipeline [--n 50000] [--naive-n 3000] [--latency-s 15]`.

With the VADER engine, on whatever cores this machine has:
- Kafka path: tansu broker + PostgreSQL, processor and ingestor as separate `python -m pipeline`
  processes; this process is the producer. Sustained tweets/s over --n tweets, measured from the
  first send to the last row committed (rows counted in the DB).
- Embedded path: MemoryBus + SQLite, processor and ingestor as threads in this process.
- Latency: a steady 200 tweets/s for --latency-s seconds; latency = when a reader first sees the
  row (DB polled every 10 ms) minus when the tweet was sent. p50 / p95 / max.
- Naive mode, same run, same code with BATCH_SIZE=1, INGEST_BATCH_SIZE=1 and no batch wait: one
  message at a time, a flush + offset commit per message, one INSERT transaction per row.

Texts are the real airline tweets (cycled with fresh ids) when ../shared/data is present, else
mock tweets. Figures are printed as they come; ONE JSON line of figures is printed LAST.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
AIRLINE = ROOT.parent / "shared" / "data" / "airline_tweets.csv"
sys.path.insert(0, str(ROOT))

from pipeline.bus.kafka import KafkaBus  # noqa: E402
from pipeline.bus.memory import MemoryBus  # noqa: E402
from pipeline.contracts import RawTweet, encode  # noqa: E402
from pipeline.settings import Settings  # noqa: E402

FAST = dict(sentiment_engine="vader", heartbeat_interval_seconds=1.0, throughput_log_seconds=10.0,
            alerts_enabled=False, kafka_session_timeout_ms=2000, kafka_heartbeat_interval_ms=500,
            kafka_enable_idempotence=False,
            kafka_partitions=6)
NAIVE = dict(batch_size=1, ingest_batch_size=1, batch_wait_ms=0, ingest_batch_wait_ms=0)
BATCHED: dict = {}  # the production defaults: BATCH_SIZE 64 / 200 ms, INGEST_BATCH_SIZE 1000 / 250 ms


def texts() -> list[tuple[str, str]]:
    if AIRLINE.exists():
        with AIRLINE.open(newline="", encoding="utf-8") as fh:
            return [(r["text"], r["keyword"]) for r in csv.DictReader(fh)]
    from pipeline.producers.mock import MockGenerator

    gen = MockGenerator(Settings(_env_file=None))
    return [(t.text, t.keyword) for t in gen.batch(["Tesla", "Apple", "United"], 5000)]


class Payloads:
    """Pre-encoded RawTweets with unique ids, so producing costs as little as possible."""

    def __init__(self, tag: str) -> None:
        self.corpus = texts()
        self.tag = tag
        self.n = 0
        self.base = datetime.now(UTC).replace(second=0, microsecond=0)

    def make(self, count: int) -> list[tuple[str, bytes]]:
        out = []
        for _ in range(count):
            text, keyword = self.corpus[self.n % len(self.corpus)]
            tid = f"{self.tag}-{self.n}"
            tweet = RawTweet(id=tid, text=text, keyword=keyword, source="replay",
                             created_at=self.base + timedelta(milliseconds=self.n))
            out.append((tid, encode(tweet)))
            self.n += 1
        return out


def count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("select count(*) from tweets")).scalar() or 0


def wait_rows(engine: sa.Engine, n: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count(engine) >= n:
            return time.perf_counter()
        time.sleep(0.05)
    raise RuntimeError(f"only {count(engine)} of {n} rows after {timeout} s")


def send_all(producer, topic: str, items: list[tuple[str, bytes]]) -> None:
    for i, (key, value) in enumerate(items, 1):
        producer.send(topic, key=key, value=value)
        if i % 5000 == 0:
            producer.flush()
    producer.flush()


def throughput(producer, topic: str, engine: sa.Engine, items: list[tuple[str, bytes]],
               already: int, timeout: float) -> float:
    started = time.perf_counter()
    send_all(producer, topic, items)
    done = wait_rows(engine, already + len(items), timeout)
    return len(items) / (done - started)


def latency(producer, topic: str, engine: sa.Engine, payloads: Payloads, *, rate: float,
            seconds: float) -> dict:
    """Send at `rate`/s; a watcher polls for new rows every 10 ms and notes when each id appears."""
    sent_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    stop = threading.Event()
    with engine.connect() as conn:
        last_seq = conn.execute(sa.text("select coalesce(max(seq), 0) from tweets")).scalar()

    def watch() -> None:
        nonlocal last_seq
        while not stop.is_set():
            with engine.connect() as conn:
                rows = conn.execute(sa.text("select seq, id from tweets where seq > :s order by seq"),
                                    {"s": last_seq}).all()
            now = time.perf_counter()
            for seq, tid in rows:
                seen_at.setdefault(tid, now)
                last_seq = max(last_seq, seq)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    total = int(rate * seconds)
    items = payloads.make(total)
    started = time.perf_counter()
    for i, (key, value) in enumerate(items):
        target = started + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent_at[key] = time.perf_counter()
        producer.send(topic, key=key, value=value)
        producer.flush()  # a live producer delivers each tweet as it comes
    deadline = time.monotonic() + 30
    while len(seen_at) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    watcher.join(5)
    lat = sorted(seen_at[k] - sent_at[k] for k in sent_at if k in seen_at)
    if not lat:
        return {"n": 0}
    q = statistics.quantiles(lat, n=100)
    return {"n": len(lat), "lost": total - len(lat), "p50_ms": round(q[49] * 1000, 1),
            "p95_ms": round(q[94] * 1000, 1), "max_ms": round(lat[-1] * 1000, 1),
            "achieved_rate": round(total / (sent_at[items[-1][0]] - started), 1)}


# --- embedded ------------------------------------------------------------------------------------

def embedded(n: int, naive_n: int, latency_s: float, workdir: Path) -> dict:
    from db.database import open_database
    from pipeline.ingestor import Ingestor
    from pipeline.processor import Processor

    results: dict = {}
    for mode, extra, size in (("batched", BATCHED, n), ("naive", NAIVE, naive_n)):
        url = f"sqlite:///{workdir / f'embedded-{mode}.db'}"
        settings = Settings(_env_file=None, database_url=url, **FAST, **extra)
        db = open_database(settings)
        bus = MemoryBus()
        stop = threading.Event()
        stages = (Processor(settings, bus=bus, db=db), Ingestor(settings, bus=bus, db=db))
        threads = [threading.Thread(target=s.run, args=(stop,), daemon=True) for s in stages]
        for t in threads:
            t.start()
        payloads = Payloads(f"emb-{mode}")
        producer = bus.producer()
        send_all(producer, settings.raw_topic, payloads.make(10))
        wait_rows(db.engine, 10, 60)
        rate = throughput(producer, settings.raw_topic, db.engine, payloads.make(size), 10, timeout=900)
        results[f"{mode}_tweets_per_s"] = round(rate, 1)
        print(f"embedded {mode}: {rate:,.0f} tweets/s over {size:,} tweets", flush=True)
        if mode == "batched":
            lat = latency(producer, settings.raw_topic, db.engine, payloads, rate=200, seconds=latency_s)
            results["latency_200_per_s"] = lat
            print(f"embedded latency at 200/s: {lat}", flush=True)
        stop.set()
        for t in threads:
            t.join(30)
        db.close()
    results["ratio"] = round(results["batched_tweets_per_s"] / results["naive_tweets_per_s"], 1)
    return results


# --- Kafka -----------------------------------------------------------------------------------------

def stage_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_"))}
    for name, value in settings.model_dump().items():
        if value is None or isinstance(value, list | dict):
            continue
        env[name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    env["LOG_LEVEL"] = "WARNING"
    return env


def kafka(n: int, naive_n: int, latency_s: float) -> dict:
    from tests.fixtures.kafka import TansuBroker
    from tests.fixtures.postgres import ThrowawayCluster, _answers, create_database, drop_database

    broker = TansuBroker()
    broker.start()
    cluster = None
    server = os.environ.get("BENCH_PG_URL") or "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    if not _answers(server):
        cluster = ThrowawayCluster()
        server = cluster.start()
    results: dict = {}
    try:
        for mode, extra, size in (("batched", BATCHED, n), ("naive", NAIVE, naive_n)):
            url = create_database(server)
            tag = uuid.uuid4().hex[:6]
            settings = Settings(_env_file=None, database_url=url, kafka_bootstrap_servers=broker.bootstrap,
                                raw_topic=f"raw-{tag}", analyzed_topic=f"an-{tag}",
                                dead_letter_topic=f"dl-{tag}", processor_group_id=f"p-{tag}",
                                ingestor_group_id=f"i-{tag}", **FAST, **extra)
            env = stage_env(settings)
            logs = [tempfile.TemporaryFile() for _ in range(2)]
            from db.database import open_database

            open_database(settings).close()  # schema first, so this process can count rows at once
            procs = [subprocess.Popen([sys.executable, "-m", "pipeline", cmd], cwd=ROOT, env=env,
                                      stdout=log, stderr=subprocess.STDOUT)
                     for cmd, log in zip(("process", "ingest"), logs, strict=True)]
            try:
                engine = sa.create_engine(url)
                bus = KafkaBus(settings)
                bus.ensure_topics([settings.raw_topic])
                producer = bus.producer()
                payloads = Payloads(f"k-{mode}")
                send_all(producer, settings.raw_topic, payloads.make(10))
                wait_rows(engine, 10, 120)
                rate = throughput(producer, settings.raw_topic, engine, payloads.make(size), 10, timeout=900)
                results[f"{mode}_tweets_per_s"] = round(rate, 1)
                print(f"kafka {mode}: {rate:,.0f} tweets/s over {size:,} tweets", flush=True)
                if mode == "batched":
                    lat = latency(producer, settings.raw_topic, engine, payloads, rate=200, seconds=latency_s)
                    results["latency_200_per_s"] = lat
                    print(f"kafka latency at 200/s: {lat}", flush=True)
                producer.close()
                engine.dispose()
            finally:
                for p in procs:
                    p.terminate()
                for p, log in zip(procs, logs, strict=True):
                    try:
                        p.wait(30)
                    except subprocess.TimeoutExpired:
                        p.kill()
                    if p.returncode not in (0, -15):
                        log.seek(0)
                        print(log.read().decode(errors="replace")[-2000:], file=sys.stderr)
                    log.close()
                drop_database(server, url)
    finally:
        broker.destroy()
        if cluster is not None:
            cluster.destroy()
    results["ratio"] = round(results["batched_tweets_per_s"] / results["naive_tweets_per_s"], 1)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_pipeline")
    parser.add_argument("--n", type=int, default=50_000, help="tweets per throughput run")
    parser.add_argument("--naive-n", type=int, default=3_000, help="tweets for the naive runs")
    parser.add_argument("--latency-s", type=float, default=15.0, help="seconds at 200 tweets/s")
    parser.add_argument("--only", choices=("kafka", "embedded"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    figures: dict = {"bench": "pipeline", "engine": "vader", "n": args.n, "naive_n": args.naive_n,
                     "cpus": os.cpu_count(), "data": "airline_tweets.csv" if AIRLINE.exists() else "mock",
                     "settings": {k: getattr(Settings(_env_file=None), k) for k in (
                         "batch_size", "batch_wait_ms", "ingest_batch_size", "ingest_batch_wait_ms")},
                     "naive_settings": NAIVE}
    with tempfile.TemporaryDirectory(prefix="sp-bench-") as tmp:
        if args.only in (None, "embedded"):
            figures["embedded"] = embedded(args.n, args.naive_n, args.latency_s, Path(tmp))
        if args.only in (None, "kafka"):
            figures["kafka"] = kafka(args.n, args.naive_n, args.latency_s)
    targets = {"kafka_tweets_per_s": 1500, "embedded_tweets_per_s": 3000, "p95_ms": 1000}
    figures["targets"] = targets
    if "kafka" in figures:
        figures["kafka_meets_target"] = (figures["kafka"]["batched_tweets_per_s"]
                                         >= targets["kafka_tweets_per_s"])
    if "embedded" in figures:
        figures["embedded_meets_target"] = (figures["embedded"]["batched_tweets_per_s"]
                                            >= targets["embedded_tweets_per_s"])
    print(json.dumps(figures, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
