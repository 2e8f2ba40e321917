"""API benchmark at scale: REST latency under open-loop load, closed-loop maximum, WS fan-out.

    .venv/bin/python -m bench.bench_api                       # 1M tweets, 500 WS clients
    .venv/bin/python -m bench.bench_api --rows 200000 --ws-clients 200 --duration 10   # smaller

1. Data: `--rows` synthetic tweets over 7 days and 10 keywords, generated server-side with the
   storage benchmark's generate_series loader, in a throwaway PostgreSQL database (dropped after).
2. The API runs as its own process (`python -m api`); the load generator runs here, on the same
   machine. Open loop: requests are sent on a fixed schedule (`--rate`/s) whatever the answers, and
   latency is counted from the scheduled time (no coordinated omission), alternating
   GET /summary?keyword=K&window=24h and GET /sentiment-trend?keyword=K&since=<24h ago> (1-minute
   buckets: 1440 points). Closed loop: `--workers` clients back to back, for the maximum rate.
3. Naive baseline, same run, same data, same load: the seed's design, an app whose `async def` routes
   call the query layer directly and so block the event loop.
4. WS fan-out: `--ws-clients` clients on /ws/tweets while `--ws-rate` tweets/s are stored through
   db.writes.write_tweets; push latency = arrival at the client - the writer's COMMIT returning.

Targets (issue 4): REST p95 < 50 ms at 100 req/s open loop; WS push p95 < 1 s. The last line is
one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
KEYWORDS = ["Tesla", "United", "Apple", "Delta", "JetBlue", "Amazon", "Google", "Netflix", "Nvidia", "Boeing"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


def _stats(samples_s: list[float]) -> dict:
    ms = [s * 1000 for s in samples_s]
    return {
        "n": len(ms),
        "p50_ms": round(_pct(ms, 0.5), 2),
        "p95_ms": round(_pct(ms, 0.95), 2),
        "p99_ms": round(_pct(ms, 0.99), 2),
        "max_ms": round(max(ms), 2) if ms else None,
    }


# --- the naive baseline app (seed design: blocking DB calls inside async routes) --------------------


def naive_app(url: str):
    from fastapi import FastAPI

    from db import queries
    from db.database import open_database
    from pipeline.settings import Settings

    db = open_database(Settings(_env_file=None, database_url=url, keywords=KEYWORDS), init=False)
    app = FastAPI()

    @app.get("/summary")
    async def summary(keyword: str, window: str = "24h"):
        # Blocking call on the event loop, as in the seed.
        return queries.summary(db, keywords=[keyword], window=timedelta(hours=24))

    @app.get("/sentiment-trend")
    async def trend(keyword: str, since: str):
        start = datetime.fromisoformat(since)
        return queries.trend(db, keywords=[keyword], since=start, until=datetime.now(UTC))

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    return app


def serve_naive(url: str, port: int) -> None:
    import uvicorn

    uvicorn.run(naive_app(url), host="127.0.0.1", port=port, log_level="warning")


# --- processes -------------------------------------------------------------------------------------


def start_server(cmd: list[str], env: dict, port: int) -> subprocess.Popen:
    # stderr to a file, never a pipe nobody reads (a full pipe would stall the server).
    log = tempfile.NamedTemporaryFile(prefix="bench-api-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    proc.log_path = log.name
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {Path(log.name).read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become healthy")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    errors = [line for line in Path(proc.log_path).read_text().splitlines() if "Error" in line]
    if errors:
        print(f"server log {proc.log_path}: {len(errors)} error line(s), last: {errors[-1][:300]}")
    else:
        os.unlink(proc.log_path)


# --- REST load -------------------------------------------------------------------------------------


def _paths(n: int, keywords: list[str]) -> list[tuple[str, str, dict]]:
    since = (datetime.now(UTC) - timedelta(hours=24)).isoformat()
    out = []
    for i in range(n):
        kw = keywords[i % len(keywords)]
        if i % 2 == 0:
            out.append(("summary", "/summary", {"keyword": kw, "window": "24h"}))
        else:
            out.append(("trend", "/sentiment-trend", {"keyword": kw, "since": since}))
    return out


async def open_loop(base: str, *, rate: float, duration: float, keywords: list[str]) -> dict:
    n = int(rate * duration)
    requests = _paths(n, keywords)
    lat: dict[str, list[float]] = {"summary": [], "trend": []}
    errors = 0
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        for _name, path, params in requests[:20]:  # warm connections and caches
            await client.get(path, params=params)
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.1

        async def one(i: int) -> None:
            nonlocal errors
            name, path, params = requests[i]
            scheduled = start + i / rate
            try:
                r = await client.get(path, params=params)
                if r.status_code != 200:
                    errors += 1
            except httpx.HTTPError:  # a timeout counts, with its latency
                errors += 1
            lat[name].append(loop.time() - scheduled)

        tasks = []
        for i in range(n):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - start
    return {
        "summary": _stats(lat["summary"]),
        "trend": _stats(lat["trend"]),
        "all": _stats(lat["summary"] + lat["trend"]),
        "errors": errors,
        "achieved_rps": round(n / elapsed, 1),
    }


async def closed_loop(base: str, *, workers: int, duration: float, keywords: list[str]) -> dict:
    requests = _paths(1000, keywords)
    done: list[float] = []
    errors = 0
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + duration

        async def worker(w: int) -> None:
            nonlocal errors
            i = w
            while loop.time() < stop_at:
                _, path, params = requests[i % len(requests)]
                t0 = loop.time()
                try:
                    r = await client.get(path, params=params)
                    if r.status_code != 200:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                done.append(loop.time() - t0)
                i += workers

        started = loop.time()
        await asyncio.gather(*(worker(w) for w in range(workers)))
        elapsed = loop.time() - started
    return {"rps": round(len(done) / elapsed, 1), "workers": workers, **_stats(done), "errors": errors}


# --- WS fan-out ------------------------------------------------------------------------------------


async def ws_fanout(ws_base: str, url: str, *, clients: int, rate: float, duration: float) -> dict:
    from websockets.asyncio.client import connect

    from db.database import open_database
    from db.writes import write_tweets
    from pipeline.contracts import AnalyzedTweet
    from pipeline.settings import Settings

    db = open_database(Settings(_env_file=None, database_url=url, keywords=KEYWORDS), init=False)
    commits: dict[str, float] = {}
    arrivals: list[tuple[str, float]] = []
    sockets = []
    for _ in range(clients):
        sockets.append(await connect(f"{ws_base}/ws/tweets", max_queue=None, open_timeout=30))
    for ws in sockets:
        await ws.recv()  # hello: subscribed

    stop = asyncio.Event()

    async def reader(ws) -> None:
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), 1.0)
            except TimeoutError:
                continue
            now = time.time()
            frame = json.loads(raw)
            if frame.get("type") == "tweets":
                arrivals.extend((t["id"], now) for t in frame["data"])

    readers = [asyncio.create_task(reader(ws)) for ws in sockets]

    def writer() -> None:
        rng = random.Random(7)
        per_tick, tick = max(1, int(rate / 10)), 0.1
        total = int(rate * duration)
        sent, next_at, run = 0, time.monotonic(), uuid.uuid4().hex[:6]
        while sent < total:
            batch = []
            for _ in range(min(per_tick, total - sent)):
                label = rng.choice(("negative", "neutral", "positive"))
                batch.append(
                    AnalyzedTweet(
                        id=f"ws-{run}-{sent}",
                        text=f"bench tweet {sent} about the flight",
                        keyword=rng.choice(KEYWORDS),
                        created_at=datetime.now(UTC),
                        source="mock",
                        label=label,
                        p_neg=0.3,
                        p_neu=0.4,
                        p_pos=0.3,
                        score=0.0,
                        engine="bench",
                        processed_at=datetime.now(UTC),
                    )
                )
                sent += 1
            write_tweets(db, batch)
            done = time.time()
            for t in batch:
                commits[t.id] = done
            next_at += tick
            time.sleep(max(0.0, next_at - time.monotonic()))

    await asyncio.to_thread(writer)
    await asyncio.sleep(3)  # let the last pushes arrive
    stop.set()
    await asyncio.gather(*readers)
    for ws in sockets:
        await ws.close()
    db.close()
    lags = [at - commits[i] for i, at in arrivals if i in commits]
    expected = len(commits) * clients
    per_client_complete = len(lags) == expected
    return {
        "clients": clients,
        "rate": rate,
        "tweets": len(commits),
        "deliveries": len(lags),
        "expected_deliveries": expected,
        "complete": per_client_complete,
        "p50_s": round(_pct(lags, 0.5), 3),
        "p95_s": round(_pct(lags, 0.95), 3),
        "max_s": round(max(lags), 3) if lags else None,
    }


# --- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--keywords", type=int, default=10)
    parser.add_argument("--rate", type=float, default=100.0, help="open-loop requests per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per load phase")
    parser.add_argument("--workers", type=int, default=8, help="closed-loop concurrent clients")
    parser.add_argument("--ws-clients", type=int, default=500)
    parser.add_argument("--ws-rate", type=float, default=50.0, help="tweets stored per second")
    parser.add_argument("--no-baseline", action="store_true", help="skip the naive app")
    parser.add_argument("--serve-naive", nargs=2, metavar=("URL", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--server-url",
        default=os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("TEST_DATABASE_URL")
        or "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
    )
    args = parser.parse_args(argv)
    if args.serve_naive:
        serve_naive(args.serve_naive[0], int(args.serve_naive[1]))
        return 0

    from bench.bench_storage import _generate_server_side
    from db.database import open_database
    from pipeline.settings import Settings

    keywords = KEYWORDS[: args.keywords]
    name = f"sp_bench_api_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(args.server_url).set(database=name).render_as_string(hide_password=False)
    figures: dict = {
        "bench": "api",
        "rows": args.rows,
        "keywords": len(keywords),
        "cpus": os.cpu_count(),
        "open_loop_rate": args.rate,
        "duration_s": args.duration,
    }
    procs: list[subprocess.Popen] = []
    try:
        db = open_database(Settings(_env_file=None, database_url=url, keywords=keywords))
        figures["db_mode"] = db.mode
        load_s = _generate_server_side(db, rows=args.rows, days=args.days, keywords=keywords)
        with db.engine.connect() as conn:
            figures["rows_stored"] = conn.exec_driver_sql("SELECT count(*) FROM tweets").scalar()
        db.close()
        print(f"loaded {figures['rows_stored']:,} tweets in {load_s:.1f}s (mode={figures['db_mode']})")

        env = {
            **os.environ,
            "DATABASE_URL": url,
            "ALERTS_ENABLED": "false",
            "LOG_LEVEL": "WARNING",
            "KEYWORDS": ",".join(keywords),
            "API_KEY": "",
            "PYTHONPATH": str(ROOT),
        }
        port = _free_port()
        api = start_server([sys.executable, "-m", "api", "--port", str(port)], env, port)
        procs.append(api)
        base = f"http://127.0.0.1:{port}"
        closed = asyncio.run(
            closed_loop(base, workers=args.workers, duration=args.duration / 2, keywords=keywords)
        )
        print(f"closed loop ({args.workers} clients): {closed['rps']} req/s, p95 {closed['p95_ms']} ms")
        ours = asyncio.run(open_loop(base, rate=args.rate, duration=args.duration, keywords=keywords))
        print(
            f"open loop {args.rate:.0f}/s: summary p95 {ours['summary']['p95_ms']} ms, "
            f"trend p95 {ours['trend']['p95_ms']} ms, achieved {ours['achieved_rps']}/s, "
            f"errors {ours['errors']}"
        )
        figures.update(
            {
                "summary_p50_ms": ours["summary"]["p50_ms"],
                "summary_p95_ms": ours["summary"]["p95_ms"],
                "trend_p50_ms": ours["trend"]["p50_ms"],
                "trend_p95_ms": ours["trend"]["p95_ms"],
                "open_loop_achieved_rps": ours["achieved_rps"],
                "open_loop_errors": ours["errors"],
                "closed_loop_max_rps": closed["rps"],
                "closed_loop_p95_ms": closed["p95_ms"],
            }
        )

        ws = asyncio.run(
            ws_fanout(
                f"ws://127.0.0.1:{port}",
                url,
                clients=args.ws_clients,
                rate=args.ws_rate,
                duration=args.duration,
            )
        )
        print(
            f"ws fan-out {ws['clients']} clients at {ws['rate']:.0f} tweets/s: push p50 {ws['p50_s']} s, "
            f"p95 {ws['p95_s']} s, max {ws['max_s']} s; {ws['deliveries']:,}/{ws['expected_deliveries']:,} "
            f"deliveries"
        )
        figures.update(
            {
                "ws_clients": ws["clients"],
                "ws_rate": ws["rate"],
                "ws_push_p50_s": ws["p50_s"],
                "ws_push_p95_s": ws["p95_s"],
                "ws_push_max_s": ws["max_s"],
                "ws_deliveries": ws["deliveries"],
                "ws_expected_deliveries": ws["expected_deliveries"],
            }
        )
        stop_server(api)
        procs.remove(api)

        if not args.no_baseline:
            nport = _free_port()
            naive = start_server(
                [sys.executable, "-m", "bench.bench_api", "--serve-naive", url, str(nport)], env, nport
            )
            procs.append(naive)
            nbase = f"http://127.0.0.1:{nport}"
            seed_closed = asyncio.run(
                closed_loop(nbase, workers=args.workers, duration=args.duration / 2, keywords=keywords)
            )
            seed = asyncio.run(open_loop(nbase, rate=args.rate, duration=args.duration, keywords=keywords))
            print(
                f"naive (blocking) open loop: summary p95 {seed['summary']['p95_ms']} ms, trend p95 "
                f"{seed['trend']['p95_ms']} ms; closed loop {seed_closed['rps']} req/s"
            )
            figures.update(
                {
                    "naive_summary_p95_ms": seed["summary"]["p95_ms"],
                    "naive_trend_p95_ms": seed["trend"]["p95_ms"],
                    "naive_closed_loop_rps": seed_closed["rps"],
                    "p95_ratio_naive_over_ours": round(
                        seed["all"]["p95_ms"] / max(ours["all"]["p95_ms"], 1e-9), 2
                    ),
                    "closed_loop_ratio_ours_over_naive": round(
                        closed["rps"] / max(seed_closed["rps"], 1e-9), 2
                    ),
                }
            )
        targets = {
            "summary p95 < 50 ms": figures["summary_p95_ms"] < 50,
            "sentiment-trend p95 < 50 ms": figures["trend_p95_ms"] < 50,
            "ws push p95 < 1 s": figures["ws_push_p95_s"] < 1.0,
            "ws every delivery": ws["complete"],
        }
        for target, ok in targets.items():
            print(f"{'PASS' if ok else 'MISS'} {target}")
        figures["targets_met"] = all(targets.values())
    finally:
        for proc in procs:
            stop_server(proc)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
