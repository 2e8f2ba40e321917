"""Storage benchmark on PostgreSQL: batched ingest vs row-by-row, then query latency at scale.

    .venv/bin/python -m bench.bench_storage                 # 1M tweets, 10 keywords, 7 days
    .venv/bin/python -m bench.bench_storage --rows 100000   # smaller

1. Ingest: db.writes.write_tweets in batches (COPY into a temp table, INSERT ... ON CONFLICT DO NOTHING
   RETURNING feeding the sentiment_1m upsert, one transaction per batch) with every index in place
   (primary key, time, keyword+time, seq, trigram GIN on text), against the naive baseline measured
   in the same run: one INSERT + aggregate upsert + COMMIT per tweet.
2. Scale: `--rows` synthetic tweets generated server-side (generate_series) over `--days` days and
   `--keywords` keywords, aggregate built from them, ANALYZE; then p50/p95 of summary (24 h), trend
   (24 h, 1-minute buckets), a latest-tweets page (first and a keyset next page) and an ad-hoc text
   search count for an untracked term, through db/queries.py.

Runs in a throwaway database it creates and drops on the server (--server-url, default
BENCH_DATABASE_URL, TEST_DATABASE_URL or postgres@127.0.0.1:5432). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from db import queries, schema
from db.database import open_database
from db.writes import write_tweets
from pipeline.contracts import AnalyzedTweet
from pipeline.settings import Settings

KEYWORDS = ["Tesla", "United", "Apple", "Delta", "JetBlue", "Amazon", "Google", "Netflix", "Nvidia", "Boeing"]
WORDS = [
    "flight",
    "delayed",
    "great",
    "service",
    "crew",
    "thanks",
    "bag",
    "lost",
    "gate",
    "love",
    "worst",
    "customer",
    "late",
    "seat",
    "awesome",
    "hours",
    "help",
    "phone",
    "update",
    "new",
    "price",
    "app",
]
SEARCH_TERM = "cybertruck"  # ~1% of synthetic tweets, never a tracked keyword
LABELS = ("negative", "neutral", "positive")


def _synthetic_tweets(n: int, *, prefix: str, now: datetime, rng: random.Random) -> list[AnalyzedTweet]:
    out = []
    for i in range(n):
        label = rng.choice(LABELS)
        score = {"negative": -1, "neutral": 0, "positive": 1}[label] * rng.uniform(0.05, 1.0)
        kw = KEYWORDS[i % len(KEYWORDS)]
        text = f"@{kw} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18)))
        out.append(
            AnalyzedTweet(
                id=f"{prefix}{i}",
                text=text,
                created_at=now - timedelta(seconds=rng.uniform(0, 3600)),
                keyword=kw,
                lang="en",
                source="mock",
                label=label,
                p_neg=0.2,
                p_neu=0.5,
                p_pos=0.3,
                score=round(score, 4),
                engine="bench",
                processed_at=now,
            )
        )
    return out


_ROW_INSERT = sa.text("""INSERT INTO tweets (id, keyword, created_at, ingested_at, text, lang, source,
        gold_label, label, p_neg, p_neu, p_pos, score, engine)
    VALUES (:id, :keyword, :created_at, now(), :text, :lang, :source, :gold_label, :label, :p_neg, :p_neu,
        :p_pos, :score, :engine)
    ON CONFLICT (id, keyword, created_at) DO NOTHING
    RETURNING keyword, created_at, label, score""")
_ROW_AGG = sa.text("""INSERT INTO sentiment_1m AS s
        (bucket, keyword, n, n_neg, n_neu, n_pos, sum_score, avg_score)
    VALUES (date_trunc('minute', CAST(:created_at AS timestamptz)), :keyword, 1, :neg, :neu, :pos,
        :score, :score)
    ON CONFLICT (bucket, keyword) DO UPDATE SET n = s.n + 1, n_neg = s.n_neg + excluded.n_neg,
        n_neu = s.n_neu + excluded.n_neu, n_pos = s.n_pos + excluded.n_pos,
        sum_score = s.sum_score + excluded.sum_score,
        avg_score = (s.sum_score + excluded.sum_score) / (s.n + 1)""")


def _row_by_row(db, tweets: list[AnalyzedTweet]) -> None:
    """The naive baseline: one INSERT, one aggregate upsert and one COMMIT per tweet."""
    with db.engine.connect() as conn:
        for t in tweets:
            with conn.begin():
                params = t.model_dump(
                    include={
                        "id",
                        "keyword",
                        "created_at",
                        "text",
                        "lang",
                        "source",
                        "gold_label",
                        "label",
                        "p_neg",
                        "p_neu",
                        "p_pos",
                        "score",
                        "engine",
                    }
                )
                row = conn.execute(_ROW_INSERT, params).first()
                if row is not None:
                    conn.execute(
                        _ROW_AGG,
                        {
                            "created_at": t.created_at,
                            "keyword": t.keyword,
                            "score": t.score,
                            "neg": int(t.label == "negative"),
                            "neu": int(t.label == "neutral"),
                            "pos": int(t.label == "positive"),
                        },
                    )


def _generate_server_side(db, *, rows: int, days: int, keywords: list[str]) -> float:
    """Bulk-load `rows` synthetic tweets with generate_series; indexes rebuilt afterwards. Seconds."""
    started = time.perf_counter()
    words = "ARRAY[" + ",".join(f"'{w}'" for w in WORDS) + "]"
    kws = "ARRAY[" + ",".join(f"'{k}'" for k in keywords) + "]"
    with db.engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE tweets, sentiment_1m")
        for name in (
            "ix_tweets_created_seq",
            "ix_tweets_kw_created_seq",
            "ix_tweets_seq",
            "ix_tweets_text_trgm",
        ):
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
        conn.exec_driver_sql(f"""
            INSERT INTO tweets (id, keyword, created_at, ingested_at, text, lang, source, label,
                                p_neg, p_neu, p_pos, score, engine)
            SELECT 'g' || g, kw, ts, ts, txt, 'en', 'replay', lab, 0.2, 0.5, 0.3,
                   CASE lab WHEN 'negative' THEN -r WHEN 'positive' THEN r ELSE 0 END, 'bench'
            FROM (
                SELECT g,
                       ({kws})[1 + mod(g, {len(keywords)})] AS kw,
                       now() - random() * INTERVAL '{int(days)} days' AS ts,
                       (ARRAY['negative','neutral','positive'])[1 + floor(random() * 3)::int] AS lab,
                       round(random()::numeric, 4)::float8 AS r,
                       '@' || ({kws})[1 + mod(g, {len(keywords)})] || ' ' ||
                       array_to_string(ARRAY(SELECT ({words})[1 + floor(random() * {len(WORDS)})::int]
                                             FROM generate_series(1, 6 + mod(g, 12)) WHERE g > 0), ' ') ||
                       CASE WHEN random() < 0.01 THEN ' {SEARCH_TERM}' ELSE '' END AS txt
                FROM generate_series(1, {int(rows)}) AS g
            ) s""")
        conn.exec_driver_sql("""
            INSERT INTO sentiment_1m (bucket, keyword, n, n_neg, n_neu, n_pos, sum_score, avg_score)
            SELECT date_trunc('minute', created_at), keyword, count(*),
                   count(*) FILTER (WHERE label = 'negative'), count(*) FILTER (WHERE label = 'neutral'),
                   count(*) FILTER (WHERE label = 'positive'), sum(score), sum(score) / count(*)
            FROM tweets GROUP BY 1, 2""")
    schema.init_schema(db)  # recreates the indexes exactly as the application defines them
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE tweets")
        conn.exec_driver_sql("VACUUM ANALYZE sentiment_1m")
    return time.perf_counter() - started


def _backend_cpu(db):
    """CPU seconds used so far by the writer's server backend (a local server only; else 0)."""
    pid = db.writer_connection.dbapi_connection.get_backend_pid()
    path = f"/proc/{pid}/stat"

    def read() -> float:
        try:
            with open(path) as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    return read


def _latency(fn, *, repeat: int) -> dict:
    """Wall-clock percentiles, plus this process's CPU time per call (what the query layer itself
    costs on the client side, apart from waiting for a shared CPU or for the server)."""
    fn()  # warm the cache and the connection pool
    samples, cpu = [], []
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        fn()
        cpu.append((time.process_time() - cpu_started) * 1000)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[max(0, int(len(samples) * 0.95) - 1)], 2),
        "max_ms": round(samples[-1], 2),
        "client_cpu_ms": round(statistics.median(cpu), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="tweets in the query-latency dataset")
    parser.add_argument("--keywords", type=int, default=10, choices=range(1, len(KEYWORDS) + 1))
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--ingest-rows", type=int, default=50_000, help="rows for the batched ingest run")
    parser.add_argument("--baseline-rows", type=int, default=2_000, help="rows for the row-by-row baseline")
    parser.add_argument("--batch", type=int, default=1000, help="rows per write_tweets call")
    parser.add_argument("--repeat", type=int, default=50, help="samples per query")
    parser.add_argument(
        "--server-url",
        default=os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("TEST_DATABASE_URL")
        or "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
    )
    args = parser.parse_args(argv)

    name = f"sp_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(args.server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(args.server_url).set(database=name).render_as_string(hide_password=False)
    keywords = KEYWORDS[: args.keywords]
    figures: dict = {"bench": "storage", "rows": args.rows, "keywords": len(keywords), "days": args.days}
    try:
        db = open_database(Settings(_env_file=None, database_url=url, keywords=keywords))
        with db.engine.connect() as conn:
            figures["postgres"] = conn.exec_driver_sql("SHOW server_version").scalar()
            figures["synchronous_commit"] = conn.exec_driver_sql("SHOW synchronous_commit").scalar()
            figures["fsync"] = conn.exec_driver_sql("SHOW fsync").scalar()
        print(f"database {db.safe_url()} mode={db.mode} features={sorted(db.features)}")
        rng = random.Random(42)
        now = datetime.now(UTC)

        # --- ingest -----------------------------------------------------------------------------
        batch_tweets = _synthetic_tweets(args.ingest_rows, prefix="b", now=now, rng=rng)
        # Three equal rounds, median reported: other processes share the cores, one round can be unlucky.
        rounds, third = [], len(batch_tweets) // 3
        write_tweets(db, _synthetic_tweets(10, prefix="w", now=now, rng=rng))  # opens the writer session
        backend = _backend_cpu(db)
        cpu_start, server_start = time.process_time(), backend()
        for r in range(3):
            part = batch_tweets[r * third : (r + 1) * third]
            started = time.perf_counter()
            inserted = sum(
                write_tweets(db, part[i : i + args.batch]) for i in range(0, len(part), args.batch)
            )
            rounds.append(len(part) / (time.perf_counter() - started))
            assert inserted == len(part), (inserted, len(part))
        batched_rate = statistics.median(rounds)
        client_us = (time.process_time() - cpu_start) / (3 * third) * 1e6
        server_us = (backend() - server_start) / (3 * third) * 1e6 if backend() else None
        figures["ingest_client_cpu_us_per_row"] = round(client_us, 1)
        if server_us is not None:
            # Client and server work alternate on one batch's path: with a free core each, the CPU
            # time per row bounds the rate, whatever else is running on the machine.
            figures["ingest_server_cpu_us_per_row"] = round(server_us, 1)
            figures["ingest_cpu_bound_rows_per_s"] = round(1e6 / (client_us + server_us))
        done = batch_tweets[: 3 * third]
        started = time.perf_counter()
        again = sum(write_tweets(db, done[i : i + args.batch]) for i in range(0, len(done), args.batch))
        redeliver_s = time.perf_counter() - started
        assert again == 0
        big = 5 * args.batch
        big_tweets = _synthetic_tweets(args.ingest_rows // 3, prefix="B", now=now, rng=rng)
        started = time.perf_counter()
        for i in range(0, len(big_tweets), big):
            write_tweets(db, big_tweets[i : i + big])
        big_rate = len(big_tweets) / (time.perf_counter() - started)
        baseline_tweets = _synthetic_tweets(args.baseline_rows, prefix="r", now=now, rng=rng)
        started = time.perf_counter()
        _row_by_row(db, baseline_tweets)
        baseline_rate = len(baseline_tweets) / (time.perf_counter() - started)
        figures.update(
            {
                "ingest_batched_rows_per_s": round(batched_rate),
                "ingest_batched_rounds_rows_per_s": [round(r) for r in rounds],
                f"ingest_batched_{big}_rows_per_s": round(big_rate),
                "ingest_redelivery_rows_per_s": round(len(done) / redeliver_s),
                "ingest_row_by_row_rows_per_s": round(baseline_rate),
                "ingest_ratio": round(batched_rate / baseline_rate, 1),
                "ingest_batch": args.batch,
            }
        )
        print(
            f"ingest batched ({args.batch}/tx, all indexes + aggregate): {batched_rate:,.0f} rows/s, median "
            f"of {[round(r) for r in rounds]} ({len(done):,} rows); redelivery "
            f"{figures['ingest_redelivery_rows_per_s']:,} rows/s; {big}/tx {big_rate:,.0f} rows/s"
        )
        if server_us is not None:
            print(
                f"ingest CPU per row: client {client_us:.1f} us + server backend {server_us:.1f} us "
                f"-> {figures['ingest_cpu_bound_rows_per_s']:,} rows/s when the CPU is not shared"
            )
        print(
            f"ingest row-by-row insert+commit: {baseline_rate:,.0f} rows/s ({len(baseline_tweets):,} rows); "
            f"ratio {figures['ingest_ratio']}x"
        )

        # The ~70,000 tweet objects above would make every full garbage collection during the
        # query timings walk them: a cost of this script, not of the query layer. Drop them.
        del batch_tweets, part, done, big_tweets, baseline_tweets
        gc.collect()

        # --- scale ------------------------------------------------------------------------------
        load_s = _generate_server_side(db, rows=args.rows, days=args.days, keywords=keywords)
        with db.engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT count(*) FROM tweets").scalar()
            agg_rows = conn.exec_driver_sql("SELECT count(*) FROM sentiment_1m").scalar()
            size = conn.exec_driver_sql("SELECT pg_size_pretty(pg_total_relation_size('tweets'))").scalar()
        figures.update(
            {
                "rows_stored": stored,
                "aggregate_rows": agg_rows,
                "load_seconds": round(load_s, 1),
                "tweets_size": size,
            }
        )
        print(f"loaded {stored:,} tweets ({size}), {agg_rows:,} aggregate rows in {load_s:.1f}s")

        end = datetime.now(UTC)
        day = timedelta(hours=24)
        first_page = queries.latest_tweets(db, limit=50)
        checks = {
            "summary_24h_all": lambda: queries.summary(db, keywords=None, window=day, until=end),
            "summary_24h_one": lambda: queries.summary(db, keywords=[keywords[0]], window=day, until=end),
            "trend_24h_3kw_1m": lambda: queries.trend(
                db, keywords=keywords[:3], since=end - day, until=end, bucket="1m"
            ),
            "trend_7d_all_auto": lambda: queries.trend(
                db, keywords=keywords, since=end - timedelta(days=7), until=end
            ),
            "latest_page": lambda: queries.latest_tweets(db, limit=50),
            "latest_page_next": lambda: queries.latest_tweets(db, limit=50, cursor=first_page.next_cursor),
            "latest_page_keyword": lambda: queries.latest_tweets(db, keywords=[keywords[1]], limit=50),
            "text_search_count": lambda: queries.keyword_counts(db, term=SEARCH_TERM),
        }
        matched = queries.keyword_counts(db, term=SEARCH_TERM).n
        figures["text_search_matches"] = matched
        for label, fn in checks.items():
            repeat = max(5, args.repeat // 5) if label == "text_search_count" else args.repeat
            result = _latency(fn, repeat=repeat)
            figures[f"{label}_p95_ms"] = result["p95_ms"]
            figures[f"{label}_p50_ms"] = result["p50_ms"]
            print(
                f"{label:22s} p50 {result['p50_ms']:8.2f} ms  p95 {result['p95_ms']:8.2f} ms  "
                f"max {result['max_ms']:8.2f} ms  client CPU {result['client_cpu_ms']:6.2f} ms"
            )
        targets = {
            "ingest >= 20,000 rows/s": figures["ingest_batched_rows_per_s"] >= 20_000,
            "summary p95 < 50 ms": max(figures["summary_24h_all_p95_ms"], figures["summary_24h_one_p95_ms"])
            < 50,
            "24h trend p95 < 50 ms": figures["trend_24h_3kw_1m_p95_ms"] < 50,
            "latest page < 20 ms": max(figures["latest_page_p95_ms"], figures["latest_page_next_p95_ms"])
            < 20,
            "text search < 500 ms": figures["text_search_count_p95_ms"] < 500,
        }
        for target, ok in targets.items():
            print(f"{'PASS' if ok else 'MISS'} {target}")
        figures["targets_met"] = all(targets.values())
        db.close()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    # Other processes share this machine's cores; the load says how much the figures were squeezed.
    figures["loadavg_1m"] = round(os.getloadavg()[0], 2)
    figures["cpus"] = os.cpu_count()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
