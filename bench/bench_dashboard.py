"""Dashboard refresh benchmark: the server-side cost of one refresh at 1 million stored tweets.

    .venv/bin/python -m bench.bench_dashboard                # 1M tweets, 10 keywords, 7 days
    .venv/bin/python -m bench.bench_dashboard --rows 200000  # smaller

One refresh is exactly what the page's live fragment runs, without Streamlit's short query cache
(every query hits the database): `dashboard.loader.load_view` through `DirectReader` (keywords,
latest tweet time, summary with the previous window, one trend query for the selection and the
comparison, keyword counts per keyword and for the searched term, the latest tweets page, heartbeats,
alert rules) plus building the four Plotly figures and serialising them the way st.plotly_chart does
(`fig.to_dict()`, then `plotly.io.to_json(..., validate=False)`).

Naive baseline, measured in the same run: what a dashboard without the aggregate does: read the
window's raw tweets (created_at, keyword, label, score) into pandas and group them there.

Data: synthetic tweets generated server-side by bench/bench_storage.py's generator, in a throwaway
PostgreSQL database (--server-url, default BENCH_DATABASE_URL, TEST_DATABASE_URL or
postgres@127.0.0.1:5432), dropped afterwards. Target: p95 < 1 s for every scenario. The last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from datetime import UTC, datetime

import pandas as pd
import plotly.io
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bench.bench_storage import KEYWORDS, SEARCH_TERM, _generate_server_side
from dashboard.loader import DirectReader, ViewParams, build_figures, load_view
from db.database import open_database
from pipeline.settings import Settings

TARGET_MS = 1000.0


def scenarios(keywords: list[str]) -> dict[str, ViewParams]:
    three = tuple(keywords[:3])
    return {
        "1h_3kw": ViewParams(keywords=three, range_label="1 h"),
        "24h_3kw": ViewParams(keywords=three, range_label="24 h"),
        "24h_3kw_search": ViewParams(keywords=three, range_label="24 h", term=SEARCH_TERM),
        "7d_all_kw": ViewParams(keywords=tuple(keywords), range_label="7 days"),
        "7d_1kw_negative": ViewParams(keywords=(keywords[0],), range_label="7 days", label="negative"),
    }


def refresh(reader, params: ViewParams) -> tuple[float, float, int]:
    """One refresh: (query ms, figure build + serialise ms, JSON bytes sent to the browser)."""
    started = time.perf_counter()
    data = load_view(reader, params, build=False)
    queried = time.perf_counter()
    figures = build_figures(data)
    # What st.plotly_chart does with a Figure: to_dict(), then plotly.io.to_json(validate=False).
    size = sum(len(plotly.io.to_json(fig.to_dict(), validate=False)) for fig in figures.values())
    done = time.perf_counter()
    return (queried - started) * 1000, (done - queried) * 1000, size


def naive_refresh(db, params: ViewParams) -> float:
    """The same numbers from raw rows grouped in pandas (no aggregate table). Milliseconds."""
    from dashboard.state import RANGES

    started = time.perf_counter()
    until = datetime.now(UTC).replace(microsecond=0)
    window = RANGES[params.range_label]
    since = until - 2 * window  # this window and the previous one, for the KPI change
    stmt = sa.text("SELECT created_at, keyword, label, score FROM tweets "
                   "WHERE created_at >= :since AND created_at < :until AND lower(keyword) = ANY(:kws)")
    with db.engine.connect() as conn:
        frame = pd.read_sql(stmt, conn, params={"since": since, "until": until,
                                                "kws": [k.lower() for k in params.keywords]})
    current = frame[frame["created_at"] >= until - window]
    minutes = current["created_at"].dt.floor("min")
    current.groupby([current["keyword"], minutes]).agg(n=("score", "size"), avg=("score", "mean"))
    current.groupby("label").size()
    current.groupby("keyword")["score"].agg(["size", "mean"])
    frame[frame["created_at"] < until - window]["score"].mean()
    return (time.perf_counter() - started) * 1000


def _stats(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"p50": round(statistics.median(ordered), 1),
            "p95": round(ordered[max(0, int(round(len(ordered) * 0.95)) - 1)], 1),
            "max": round(ordered[-1], 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="stored tweets")
    parser.add_argument("--keywords", type=int, default=10, choices=range(1, len(KEYWORDS) + 1))
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=10, help="refreshes measured per scenario")
    parser.add_argument("--baseline-repeat", type=int, default=3, help="naive refreshes per scenario")
    parser.add_argument("--server-url", default=os.environ.get("BENCH_DATABASE_URL")
                        or os.environ.get("TEST_DATABASE_URL")
                        or "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args(argv)

    name = f"sp_bench_dash_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(args.server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(args.server_url).set(database=name).render_as_string(hide_password=False)
    keywords = KEYWORDS[: args.keywords]
    figures: dict = {"bench": "dashboard", "rows": args.rows, "keywords": len(keywords), "days": args.days}
    try:
        db = open_database(Settings(_env_file=None, database_url=url, keywords=keywords))
        figures["db_mode"] = db.mode
        load_s = _generate_server_side(db, rows=args.rows, days=args.days, keywords=keywords)
        with db.engine.connect() as conn:
            figures["rows_stored"] = conn.exec_driver_sql("SELECT count(*) FROM tweets").scalar()
        print(f"database {db.safe_url()} mode={db.mode}: {figures['rows_stored']:,} tweets loaded "
              f"in {load_s:.1f}s")

        from api.alerts.rules import AlertRuleCreate
        from db.alerts import create_rule

        # Rules make the trend chart draw thresholds, as on a configured dashboard.
        for keyword, threshold in ((keywords[0], -0.3), (None, -0.5)):
            create_rule(db, rule=AlertRuleCreate(keyword=keyword, metric="avg_score_below",
                                                 threshold=threshold))

        reader = DirectReader(db)
        worst_p95 = 0.0
        for label, params in scenarios(keywords).items():
            refresh(reader, params)  # warm the connection pool and the plans
            query_ms, build_ms, total_ms = [], [], []
            size = 0
            for _ in range(args.repeat):
                q, b, size = refresh(reader, params)
                query_ms.append(q)
                build_ms.append(b)
                total_ms.append(q + b)
            naive = [naive_refresh(db, params) for _ in range(args.baseline_repeat)]
            total, naive_s = _stats(total_ms), _stats(naive)
            worst_p95 = max(worst_p95, total["p95"])
            ratio = round(naive_s["p50"] / total["p50"], 1) if total["p50"] else None
            figures.update({
                f"{label}_refresh_p50_ms": total["p50"], f"{label}_refresh_p95_ms": total["p95"],
                f"{label}_queries_p50_ms": _stats(query_ms)["p50"],
                f"{label}_figures_p50_ms": _stats(build_ms)["p50"],
                f"{label}_naive_p50_ms": naive_s["p50"], f"{label}_ratio": ratio,
                f"{label}_json_kb": round(size / 1024, 1),
            })
            print(f"{label:16s} refresh p50 {total['p50']:7.1f} ms  p95 {total['p95']:7.1f} ms  "
                  f"(queries {_stats(query_ms)['p50']:6.1f} + figures {_stats(build_ms)['p50']:6.1f})  "
                  f"naive pandas p50 {naive_s['p50']:8.1f} ms  ratio {ratio}x  json {size / 1024:.0f} KB")
        figures["worst_refresh_p95_ms"] = worst_p95
        figures["target_ms"] = TARGET_MS
        figures["targets_met"] = worst_p95 < TARGET_MS
        print(f"{'PASS' if figures['targets_met'] else 'MISS'} one refresh < {TARGET_MS:.0f} ms "
              f"(worst p95 {worst_p95:.1f} ms)")
        db.close()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
