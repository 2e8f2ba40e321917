"""Writes: tweets with their 1-minute aggregate, dead letters, heartbeats, state, tracked keywords.

write_tweets is the hot path. Guarantees, on every backend:
- one transaction per call: all rows and their aggregate counts, or nothing;
- idempotent on (id, keyword, created_at): a redelivered tweet, or the same tweet twice in one batch,
  is stored once (the first copy wins) and counted once in `sentiment_1m`;
- `seq` increases in commit order (PostgreSQL writers serialise on an advisory lock for this), so a
  reader polling `seq > last_seen` misses nothing;
- text hygiene is done upstream by pipeline/text.py; as a last line of defence NUL bytes are dropped
  and lone surrogates replaced by U+FFFD here too, so such text is stored, never a failed batch.
  Long text is stored whole (the processor dead-letters text over MAX_TEXT_CHARS).
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import psycopg2
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from db import schema
from db.database import SQLITE_IMMEDIATE, Database
from pipeline.contracts import AnalyzedTweet, DeadLetter, utc

log = logging.getLogger(__name__)

_SURROGATE = re.compile("[\ud800-\udfff]")
_WRITE_LOCK = 0x5354_5245_414D_0002  # serialises tweet writers so seq order == commit order
_SQLITE_CHUNK = 400  # bound parameters per IN (...) lookup (SQLite's limit is 32766 since 3.32)
_LABEL_INDEX = {"negative": 0, "neutral": 1, "positive": 2}

_COLUMNS = ("id", "keyword", "created_at", "ingested_at", "text", "lang", "source", "gold_label",
            "label", "p_neg", "p_neu", "p_pos", "score", "engine")


def clean_str(value: str | None) -> str | None:
    """Drop NUL (PostgreSQL rejects it in text) and replace lone surrogates (not encodable)."""
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = _SURROGATE.sub("\ufffd", value)
    return value


def _rows(tweets: Sequence[AnalyzedTweet], now: datetime) -> list[tuple]:
    """Tuples in _COLUMNS order, cleaned, de-duplicated on the key (first copy wins)."""
    seen: set[tuple] = set()
    out: list[tuple] = []
    for t in tweets:
        created = utc(t.created_at)
        key_id, key_kw = clean_str(t.id), clean_str(t.keyword)
        key = (key_id, key_kw, created)
        if key in seen:
            continue
        seen.add(key)
        out.append((key_id, key_kw, created, now, clean_str(t.text), clean_str(t.lang), t.source,
                    t.gold_label, t.label, float(t.p_neg), float(t.p_neu), float(t.p_pos),
                    float(t.score), clean_str(t.engine)))
    return out


def write_tweets(db: Database, tweets: Sequence[AnalyzedTweet]) -> int:
    """Store a batch in one transaction; returns how many rows were new (duplicates are skipped)."""
    if not tweets:
        return 0
    now = datetime.now(UTC)
    rows = _rows(tweets, now)
    if db.is_sqlite:
        return _write_sqlite(db, rows)
    inserted, minutes = _write_postgres(db, rows)
    if db.is_timescale and minutes:
        refresh_old_ranges(db, minutes)
    return inserted


# --- PostgreSQL -------------------------------------------------------------------------------------

_TEMP_TABLE = """CREATE TEMP TABLE IF NOT EXISTS sp_incoming (
    id text, keyword text, created_at timestamptz, ingested_at timestamptz, text text, lang text,
    source text, gold_label text, label text, p_neg float8, p_neu float8, p_pos float8,
    score float8, engine text
) ON COMMIT DELETE ROWS"""

_INSERT_RETURNING = f"""INSERT INTO tweets ({", ".join(_COLUMNS)})
    SELECT {", ".join(_COLUMNS)} FROM sp_incoming
    ON CONFLICT (id, keyword, created_at) DO NOTHING
    RETURNING seq, keyword, created_at, label, score"""

# The batch's result, and the notification for live readers (delivered by PostgreSQL when, and only
# if, the transaction commits; none when nothing was new).
_RESULT = f"""SELECT n, last_seq, minutes,
       (SELECT pg_notify('{schema.NOTIFY_CHANNEL}', last_seq::text) WHERE n > 0) IS NULL
FROM (SELECT count(*) AS n, max(seq) AS last_seq, {{minutes}} AS minutes FROM ins) AS result"""

# Plain PostgreSQL: the aggregate is upserted from exactly the rows the INSERT returned, i.e. only
# the rows that were new, in the same statement and transaction.
_INSERT_WITH_AGGREGATE = f"""WITH ins AS ({_INSERT_RETURNING}),
agg AS (
    INSERT INTO sentiment_1m AS s (bucket, keyword, n, n_neg, n_neu, n_pos, sum_score, avg_score)
    SELECT date_trunc('minute', created_at), keyword, count(*),
           count(*) FILTER (WHERE label = 'negative'),
           count(*) FILTER (WHERE label = 'neutral'),
           count(*) FILTER (WHERE label = 'positive'),
           sum(score), sum(score) / count(*)
    FROM ins GROUP BY 1, 2
    ON CONFLICT (bucket, keyword) DO UPDATE SET
        n = s.n + excluded.n,
        n_neg = s.n_neg + excluded.n_neg,
        n_neu = s.n_neu + excluded.n_neu,
        n_pos = s.n_pos + excluded.n_pos,
        sum_score = s.sum_score + excluded.sum_score,
        avg_score = (s.sum_score + excluded.sum_score) / (s.n + excluded.n)
)
{_RESULT.format(minutes="NULL::timestamptz[]")}"""

_INSERT_TIMESCALE = f"""WITH ins AS ({_INSERT_RETURNING})
{_RESULT.format(minutes="array_agg(DISTINCT date_trunc('minute', created_at))")}"""


def _copy_text(value: str | None) -> str:
    """A text value in COPY text format (\\N is NULL; backslash, tab, newline, CR escaped)."""
    if value is None:
        return "\\N"
    # Substring tests are memchr-fast; most values need no escaping (str.translate is 20x slower).
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def _copy_buffer(rows: list[tuple]) -> io.StringIO:
    """The batch as COPY text; ingested_at is the same for every row, so it is formatted once."""
    esc = _copy_text
    ingested = rows[0][3].isoformat()
    buf = io.StringIO()
    buf.write("".join(
        f"{esc(r[0])}\t{esc(r[1])}\t{r[2].isoformat()}\t{ingested}\t{esc(r[4])}\t{esc(r[5])}\t"
        f"{esc(r[6])}\t{esc(r[7])}\t{esc(r[8])}\t{r[9]!r}\t{r[10]!r}\t{r[11]!r}\t{r[12]!r}\t{esc(r[13])}\n"
        for r in rows
    ))
    buf.seek(0)
    return buf


def _write_postgres(db: Database, rows: list[tuple]) -> tuple[int, list[datetime]]:
    sql = _INSERT_TIMESCALE if db.is_timescale else _INSERT_WITH_AGGREGATE
    with db.writer_lock:
        cached = db.writer_connection is not None
        try:
            return _write_postgres_on(db, _writer(db), rows, sql)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            if not cached:
                raise
            # The kept connection died while idle (server restart, idle timeout): the transaction
            # never committed, so one retry on a fresh connection is safe.
            log.info("writer connection lost; retrying the batch on a new connection")
            return _write_postgres_on(db, _writer(db), rows, sql)


def _writer(db: Database):
    """The connection kept for writes: no pool checkout, pre-ping and reset per batch (3 round trips
    per batch instead of 5), and its session temp table stays. Taken out while in use."""
    raw, db.writer_connection = db.writer_connection, None
    return raw if raw is not None else db.engine.raw_connection()


def _write_postgres_on(db: Database, raw, rows: list[tuple], sql: str) -> tuple[int, list[datetime]]:
    try:
        cur = raw.cursor()
        try:
            if not raw.info.get("sp_incoming"):  # a temp table lives as long as its session
                cur.execute(_TEMP_TABLE)
            cur.copy_expert(f"COPY sp_incoming ({', '.join(_COLUMNS)}) FROM STDIN", _copy_buffer(rows))
            # The lock is taken after the COPY, so concurrent writers only serialise on the insert.
            cur.execute(f"SELECT pg_advisory_xact_lock({_WRITE_LOCK}); {sql}")
            inserted, _max_seq, minutes, _ = cur.fetchone()
            raw.commit()
            raw.info["sp_incoming"] = True  # committed, so the temp table exists from now on
        finally:
            cur.close()
    except BaseException as exc:
        raw.info.pop("sp_incoming", None)  # a rollback may have undone CREATE TEMP TABLE too
        try:
            raw.rollback()
        except psycopg2.Error:
            pass  # the connection is gone; closing it below discards it
        if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
            raw.invalidate()
        raw.close()  # back to the pool (or discarded); the next batch takes a fresh one
        raise
    db.writer_connection = raw
    return int(inserted), [utc(m) for m in (minutes or []) if m is not None]


def _merge_ranges(minutes: list[datetime], *, gap: timedelta,
                  max_ranges: int) -> list[tuple[datetime, datetime]]:
    minutes = sorted(set(minutes))
    ranges: list[list[datetime]] = []
    for m in minutes:
        end = m + timedelta(minutes=1)
        if ranges and m - ranges[-1][1] <= gap:
            ranges[-1][1] = end
        else:
            ranges.append([m, end])
    if len(ranges) > max_ranges:
        return [(ranges[0][0], ranges[-1][1])]
    return [(a, b) for a, b in ranges]


def refresh_old_ranges(db: Database, minutes: list[datetime]) -> None:
    """TimescaleDB: materialise the minutes just written that the refresh policy will never revisit.

    Real-time aggregation only covers data newer than the materialised watermark, and the policy
    only refreshes [now - start_offset, now - end_offset]; replayed or late tweets older than that
    would otherwise never reach `sentiment_1m`. refresh_continuous_aggregate cannot run inside a
    transaction, so this runs after the commit on an autocommit connection. A failure here is
    logged, not raised: the rows are committed, and a later write (or a manual refresh) covers it.
    """
    settings = db.settings
    with db.engine.connect() as conn:
        cutoff = conn.execute(
            sa.text("SELECT now() - CAST(:start AS interval) + interval '5 minutes'"),
            {"start": settings.timescale_refresh_start_offset},
        ).scalar()
    old = [m for m in minutes if m < cutoff]
    if not old:
        return
    ranges = _merge_ranges(old, gap=timedelta(hours=1), max_ranges=20)
    try:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for start, end in ranges:
                conn.execute(
                    sa.text("CALL refresh_continuous_aggregate('sentiment_1m', :start, :end)"),
                    {"start": start, "end": end},
                )
    except sa.exc.DBAPIError as exc:
        log.warning("refresh_continuous_aggregate failed for %d range(s): %s", len(ranges), exc.orig)


# --- SQLite ------------------------------------------------------------------------------------------


def _sqlite_ts(value: datetime) -> str:
    """The text form SQLAlchemy's SQLite DateTime uses, so raw and Core writes compare equal."""
    return utc(value).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _write_sqlite(db: Database, rows: list[tuple]) -> int:
    rows = [(r[0], r[1], _sqlite_ts(r[2]), _sqlite_ts(r[3]), *r[4:]) for r in rows]
    with db.engine.connect() as conn:
        conn.info[SQLITE_IMMEDIATE] = True  # take the write lock first: no one inserts in between
        with conn.begin():
            existing: set[tuple] = set()
            ids = sorted({r[0] for r in rows})
            for i in range(0, len(ids), _SQLITE_CHUNK):
                chunk = ids[i:i + _SQLITE_CHUNK]
                marks = ",".join("?" * len(chunk))
                existing.update(conn.exec_driver_sql(
                    f"SELECT id, keyword, created_at FROM tweets WHERE id IN ({marks})", tuple(chunk)
                ).all())
            new = [r for r in rows if (r[0], r[1], r[2]) not in existing]
            if not new:
                return 0
            conn.exec_driver_sql(
                f"INSERT INTO tweets ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                new,
            )
            aggregate: dict[tuple[str, str], list] = {}
            for r in new:
                bucket = r[2][:16] + ":00.000000"  # 'YYYY-MM-DD HH:MM' + zero seconds
                acc = aggregate.setdefault((bucket, r[1]), [0, 0, 0, 0, 0.0])
                acc[0] += 1
                acc[1 + _LABEL_INDEX[r[8]]] += 1
                acc[4] += r[12]
            conn.exec_driver_sql(
                """INSERT INTO sentiment_1m (bucket, keyword, n, n_neg, n_neu, n_pos, sum_score, avg_score)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (bucket, keyword) DO UPDATE SET
                    n = n + excluded.n,
                    n_neg = n_neg + excluded.n_neg,
                    n_neu = n_neu + excluded.n_neu,
                    n_pos = n_pos + excluded.n_pos,
                    sum_score = sum_score + excluded.sum_score,
                    avg_score = (sum_score + excluded.sum_score) / (n + excluded.n)""",
                [(b, k, a[0], a[1], a[2], a[3], a[4], a[4] / a[0]) for (b, k), a in aggregate.items()],
            )
    return len(new)


# --- small tables ------------------------------------------------------------------------------------


def _insert(db: Database, table: sa.Table):
    return (sqlite_dialect.insert(table) if db.is_sqlite else pg_dialect.insert(table))


def write_dead_letters(db: Database, letters: Sequence[DeadLetter]) -> None:
    """Store dead letters (embedded mode has no dead-letter topic to send them to)."""
    if not letters:
        return
    rows = [
        {"stage": clean_str(d.stage), "reason": clean_str(d.reason), "topic": clean_str(d.topic),
         "partition": d.partition, "offset": d.offset, "key": clean_str(d.key),
         "payload_b64": d.payload_b64, "failed_at": d.failed_at}
        for d in letters
    ]
    with db.engine.begin() as conn:
        conn.execute(schema.dead_letters.insert(), rows)


def beat(db: Database, *, stage: str, instance: str, engine: str | None = None, rate: float | None = None,
         lag: int | None = None, details: dict | None = None) -> None:
    """Upsert this stage instance's heartbeat row."""
    values = {"stage": stage, "instance": instance, "engine": engine, "rate": rate, "lag": lag,
              "details": details or {}, "last_seen": datetime.now(UTC)}
    stmt = _insert(db, schema.stage_heartbeats).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["stage", "instance"],
        set_={k: stmt.excluded[k] for k in ("engine", "rate", "lag", "details", "last_seen")},
    )
    with db.engine.begin() as conn:
        conn.execute(stmt)


def get_state(db: Database, key: str) -> str | None:
    with db.engine.connect() as conn:
        return conn.execute(
            sa.select(schema.pipeline_state.c.value).where(schema.pipeline_state.c.key == key)
        ).scalar()


def set_state(db: Database, key: str, value: str) -> None:
    stmt = _insert(db, schema.pipeline_state).values(key=key, value=value, updated_at=datetime.now(UTC))
    stmt = stmt.on_conflict_do_update(
        index_elements=["key"], set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at}
    )
    with db.engine.begin() as conn:
        conn.execute(stmt)


def _normalise_keyword(keyword: str) -> str:
    if not isinstance(keyword, str) or not keyword.strip():
        raise ValueError("keyword is empty")
    keyword = clean_str(keyword.strip()) or ""
    if len(keyword) > 200:
        raise ValueError("keyword is longer than 200 characters")
    return keyword


def add_keyword(db: Database, keyword: str) -> None:
    """Track a keyword (stored as given; case-insensitively unique; no-op if already tracked)."""
    seed_keywords(db, [keyword])


def seed_keywords(db: Database, keywords: list[str]) -> None:
    """Track each keyword that is not tracked yet (in any letter case)."""
    names = [_normalise_keyword(k) for k in keywords]
    if not names:
        return
    now = datetime.now(UTC)
    with db.engine.begin() as conn:
        for i, name in enumerate(names):
            # No conflict target: the unique index on lower(keyword) is what usually fires. The
            # microsecond steps keep the configured order when listing by added_at.
            stmt = _insert(db, schema.tracked_keywords).values(
                keyword=name, added_at=now + timedelta(microseconds=i))
            conn.execute(stmt.on_conflict_do_nothing())


def mark_dead_letters_replayed(db: Database, seqs: Sequence[int]) -> None:
    """Stamp dead letters as replayed (`python -m pipeline dead-letters replay` sent them back)."""
    if not seqs:
        return
    D = schema.dead_letters
    with db.engine.begin() as conn:
        conn.execute(sa.update(D).where(D.c.seq.in_(list(seqs))).values(replayed_at=datetime.now(UTC)))
