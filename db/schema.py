"""Tables (SQLAlchemy Core `metadata`), their DDL per mode, and idempotent schema start-up.

`tweets` is created from hand-written DDL rather than `metadata.create_all`, because its shape differs
per backend: on PostgreSQL `seq` comes from a sequence and the primary key is (id, keyword,
created_at), which a hypertable requires (the partition column must be in every unique index); on
SQLite `seq` is the INTEGER PRIMARY KEY (the rowid, AUTOINCREMENT so it never goes back) and
(id, keyword, created_at) is a UNIQUE constraint, the conflict target of idempotent writes. The
`tweets` Table below describes the columns for queries on both.

On TimescaleDB `sentiment_1m` is a continuous aggregate (a view with the same columns) instead of a
table; everything else is identical in all three modes.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from db.database import Database, Mode
from pipeline.contracts import utc
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

#: Bump when the schema changes; `schema_version` records every version a database was brought to.
SCHEMA_VERSION = 1

#: Channel the PostgreSQL writer notifies after each commit; the payload is the batch's max seq.
NOTIFY_CHANNEL = "streampulse_tweets"

_ADVISORY_INIT_LOCK = 0x5354_5245_414D_0001  # "STREAM" + 1: serialises concurrent `init` runs


class UTCDateTime(sa.types.TypeDecorator):
    """Timezone-aware UTC datetimes in and out, on every backend.

    PostgreSQL stores timestamptz. SQLite has no time zones: values are stored as naive UTC text
    ('YYYY-MM-DD HH:MM:SS.ffffff', which sorts chronologically) and come back tagged UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        value = utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return utc(value)


JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER only

metadata = sa.MetaData()

tweets = sa.Table(
    "tweets",
    metadata,
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("keyword", sa.Text, primary_key=True),
    sa.Column("created_at", UTCDateTime, primary_key=True),
    sa.Column("ingested_at", UTCDateTime, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("lang", sa.Text),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("gold_label", sa.Text),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("p_neg", sa.Float, nullable=False),
    sa.Column("p_neu", sa.Float, nullable=False),
    sa.Column("p_pos", sa.Float, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("engine", sa.Text, nullable=False),
    info={"custom_ddl": True},
)

sentiment_1m = sa.Table(
    "sentiment_1m",
    metadata,
    sa.Column("bucket", UTCDateTime, primary_key=True),
    sa.Column("keyword", sa.Text, primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Column("n_neg", sa.BigInteger, nullable=False),
    sa.Column("n_neu", sa.BigInteger, nullable=False),
    sa.Column("n_pos", sa.BigInteger, nullable=False),
    sa.Column("sum_score", sa.Float, nullable=False),
    sa.Column("avg_score", sa.Float),
    # Covering indexes (PostgreSQL INCLUDE): trend and summary read only the index (index-only scans),
    # 10x faster than visiting scattered heap pages. SQLite ignores INCLUDE.
    sa.Index("ix_sentiment_1m_kw_bucket", sa.func.lower(sa.column("keyword")), "bucket",
             postgresql_include=["keyword", "n", "n_neg", "n_neu", "n_pos", "sum_score"]),
    sa.Index("ix_sentiment_1m_bucket_cov", "bucket",
             postgresql_include=["keyword", "n", "n_neg", "n_neu", "n_pos", "sum_score"]),
)

tracked_keywords = sa.Table(
    "tracked_keywords",
    metadata,
    sa.Column("keyword", sa.Text, primary_key=True),
    sa.Column("added_at", UTCDateTime, nullable=False),
    sa.Index("ux_tracked_keywords_lower", sa.func.lower(sa.column("keyword")), unique=True),
)

stage_heartbeats = sa.Table(
    "stage_heartbeats",
    metadata,
    sa.Column("stage", sa.Text, primary_key=True),
    sa.Column("instance", sa.Text, primary_key=True),
    sa.Column("engine", sa.Text),
    sa.Column("rate", sa.Float),
    sa.Column("lag", sa.BigInteger),
    sa.Column("details", JSONType, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
)

pipeline_state = sa.Table(
    "pipeline_state",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("seq", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("stage", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("topic", sa.Text),
    sa.Column("partition", sa.Integer),
    sa.Column("offset", sa.BigInteger),
    sa.Column("key", sa.Text),
    sa.Column("payload_b64", sa.Text, nullable=False),
    sa.Column("failed_at", UTCDateTime, nullable=False),
    sa.Column("replayed_at", UTCDateTime),
    sa.Index("ix_dead_letters_failed_at", "failed_at"),
)

alert_rules = sa.Table(
    "alert_rules",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("keyword", sa.Text),  # NULL = every tracked keyword
    sa.Column("metric", sa.Text, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("window_minutes", sa.Integer, nullable=False, server_default="5"),
    sa.Column("baseline_minutes", sa.Integer, nullable=False, server_default="60"),
    sa.Column("min_tweets", sa.Integer, nullable=False, server_default="20"),
    sa.Column("cooldown_minutes", sa.Integer, nullable=False, server_default="30"),
    sa.Column("recipients", JSONType, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("notify_recovery", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

alert_state = sa.Table(
    "alert_state",
    metadata,
    sa.Column("rule_id", BigIntPK, sa.ForeignKey("alert_rules.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("keyword", sa.Text, primary_key=True),
    sa.Column("armed", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("holding", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("last_fired_at", UTCDateTime),
)

alert_events = sa.Table(
    "alert_events",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("rule_id", BigIntPK, sa.ForeignKey("alert_rules.id", ondelete="SET NULL")),
    sa.Column("keyword", sa.Text),
    sa.Column("kind", sa.Text, nullable=False),  # 'alert' | 'recovery'
    sa.Column("fired_at", UTCDateTime, nullable=False),
    sa.Column("metric", sa.Text, nullable=False),
    sa.Column("threshold", sa.Float),
    sa.Column("value", sa.Float),
    sa.Column("baseline_value", sa.Float),
    sa.Column("n", sa.BigInteger),
    sa.Column("n_neg", sa.BigInteger),
    sa.Column("n_neu", sa.BigInteger),
    sa.Column("n_pos", sa.BigInteger),
    sa.Column("window_minutes", sa.Integer),
    sa.Column("message_id", sa.Text),
    sa.Column("email_status", sa.Text, nullable=False, server_default="pending"),
    sa.Column("email_error", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("sent_at", UTCDateTime),
    sa.Column("recipients", JSONType),
    sa.Index("ix_alert_events_fired_at", "fired_at"),
    sa.Index("ix_alert_events_rule_keyword", "rule_id", "keyword", "fired_at"),
)

evaluator_lease = sa.Table(
    "evaluator_lease",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("holder", sa.Text, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("applied_at", UTCDateTime, nullable=False),
)

_LABEL_CHECK = "label IN ('negative', 'neutral', 'positive')"

TWEETS_DDL_POSTGRES = [
    "CREATE SEQUENCE IF NOT EXISTS tweets_seq_seq",
    f"""CREATE TABLE IF NOT EXISTS tweets (
    seq bigint NOT NULL DEFAULT nextval('tweets_seq_seq'),
    id text NOT NULL,
    keyword text NOT NULL,
    created_at timestamptz NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    text text NOT NULL,
    lang text,
    source text NOT NULL,
    gold_label text,
    label text NOT NULL CHECK ({_LABEL_CHECK}),
    p_neg double precision NOT NULL,
    p_neu double precision NOT NULL,
    p_pos double precision NOT NULL,
    score double precision NOT NULL,
    engine text NOT NULL,
    PRIMARY KEY (id, keyword, created_at)
)""",
    "ALTER SEQUENCE tweets_seq_seq OWNED BY tweets.seq",
]

#: Indexes on tweets for PostgreSQL (created after create_hypertable on TimescaleDB, so that they
#: propagate to chunks): latest-first pages, per-keyword pages and windows, and the seq tail.
TWEETS_INDEXES_POSTGRES = [
    "CREATE INDEX IF NOT EXISTS ix_tweets_created_seq ON tweets (created_at DESC, seq DESC)",
    "CREATE INDEX IF NOT EXISTS ix_tweets_kw_created_seq ON tweets "
    "(lower(keyword), created_at DESC, seq DESC)",
    "CREATE INDEX IF NOT EXISTS ix_tweets_seq ON tweets (seq)",
]

#: Trigram index for ILIKE '%term%' counts and searches; only when pg_trgm could be created.
TWEETS_TRGM_INDEX = "CREATE INDEX IF NOT EXISTS ix_tweets_text_trgm ON tweets USING gin (text gin_trgm_ops)"

TWEETS_DDL_SQLITE = [
    f"""CREATE TABLE IF NOT EXISTS tweets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    keyword TEXT NOT NULL,
    created_at DATETIME NOT NULL,
    ingested_at DATETIME NOT NULL,
    text TEXT NOT NULL,
    lang TEXT,
    source TEXT NOT NULL,
    gold_label TEXT,
    label TEXT NOT NULL CHECK ({_LABEL_CHECK}),
    p_neg REAL NOT NULL,
    p_neu REAL NOT NULL,
    p_pos REAL NOT NULL,
    score REAL NOT NULL,
    engine TEXT NOT NULL,
    UNIQUE (id, keyword, created_at)
)""",
    "CREATE INDEX IF NOT EXISTS ix_tweets_created_seq ON tweets (created_at DESC, seq DESC)",
    "CREATE INDEX IF NOT EXISTS ix_tweets_kw_created_seq ON tweets "
    "(lower(keyword), created_at DESC, seq DESC)",
]

# --- TimescaleDB ----------------------------------------------------------------------------------

_INTERVAL = re.compile(
    r"^\s*\d+(\.\d+)?\s*(microseconds?|milliseconds?|seconds?|secs?|minutes?|mins?|hours?|days?|weeks?|"
    r"months?|years?)(\s+\d+(\.\d+)?\s*(microseconds?|milliseconds?|seconds?|secs?|minutes?|mins?|hours?|"
    r"days?|weeks?|months?|years?))*\s*$",
    re.IGNORECASE,
)


def interval_literal(value: str, *, setting: str) -> str:
    """`INTERVAL '...'` for a setting, validated so that DDL never carries arbitrary text."""
    if not _INTERVAL.match(value or ""):
        raise ConfigError(f"{setting.upper()}={value!r} is not an interval such as '1 day' or '3 hours'")
    return f"INTERVAL '{value.strip()}'"


def timescale_hypertable_ddl(settings) -> list[str]:
    """Make `tweets` a hypertable on created_at (run right after CREATE TABLE, before the indexes)."""
    chunk = interval_literal(settings.timescale_chunk_interval, setting="timescale_chunk_interval")
    return [
        "CREATE EXTENSION IF NOT EXISTS timescaledb",
        f"SELECT create_hypertable('tweets', 'created_at', chunk_time_interval => {chunk}, "
        "if_not_exists => TRUE, create_default_indexes => FALSE, migrate_data => TRUE)",
    ]


#: The 1-minute continuous aggregate. avg(score) per minute is sum/n of raw rows, so re-bucketing
#: with sum(sum_score)/sum(n) stays count-weighted.
SENTIMENT_1M_CAGG = """CREATE MATERIALIZED VIEW IF NOT EXISTS sentiment_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', created_at) AS bucket,
       keyword,
       count(*) AS n,
       sum(CASE WHEN label = 'negative' THEN 1 ELSE 0 END) AS n_neg,
       sum(CASE WHEN label = 'neutral' THEN 1 ELSE 0 END) AS n_neu,
       sum(CASE WHEN label = 'positive' THEN 1 ELSE 0 END) AS n_pos,
       sum(score) AS sum_score,
       avg(score) AS avg_score
FROM tweets
GROUP BY time_bucket(INTERVAL '1 minute', created_at), keyword
WITH NO DATA"""
# (TimescaleDB indexes the aggregate on (keyword, bucket) itself: timescaledb.create_group_indexes.)


def timescale_policy_ddl(settings, *, compression_enabled: bool) -> list[str]:
    """Statements run one by one outside a transaction after the aggregate exists (idempotent)."""
    start = interval_literal(settings.timescale_refresh_start_offset,
                             setting="timescale_refresh_start_offset")
    end = interval_literal(settings.timescale_refresh_end_offset, setting="timescale_refresh_end_offset")
    every = interval_literal(settings.timescale_refresh_schedule, setting="timescale_refresh_schedule")
    stmts = [
        # Real-time aggregation is off by default since TimescaleDB 2.13: the current minute would
        # not show until the policy ran. Set it on every start, for aggregates made before.
        "ALTER MATERIALIZED VIEW sentiment_1m SET (timescaledb.materialized_only = false)",
        f"SELECT add_continuous_aggregate_policy('sentiment_1m', start_offset => {start}, "
        f"end_offset => {end}, schedule_interval => {every}, if_not_exists => TRUE)",
    ]
    if settings.timescale_compress_after:
        after = interval_literal(settings.timescale_compress_after, setting="timescale_compress_after")
        if not compression_enabled:
            # Segment by keyword (queries filter on it; a per-tweet-id segment compresses nothing),
            # ordered by time within a segment.
            stmts.append(
                "ALTER TABLE tweets SET (timescaledb.compress, "
                "timescaledb.compress_segmentby = 'keyword', "
                "timescaledb.compress_orderby = 'created_at DESC, seq DESC')"
            )
        stmts.append(
            f"SELECT add_compression_policy('tweets', compress_after => {after}, if_not_exists => TRUE)"
        )
    else:
        stmts.append("SELECT remove_compression_policy('tweets', if_exists => TRUE)")
    if settings.timescale_retention:
        keep = interval_literal(settings.timescale_retention, setting="timescale_retention")
        stmts.append(f"SELECT add_retention_policy('tweets', drop_after => {keep}, if_not_exists => TRUE)")
    else:
        # Off by default: replayed old exports must not vanish. The aggregate keeps its rows either way.
        stmts.append("SELECT remove_retention_policy('tweets', if_exists => TRUE)")
    return stmts


# --- start-up --------------------------------------------------------------------------------------


def _has_table(conn: sa.Connection, name: str) -> bool:
    return sa.inspect(conn).has_table(name)


def recorded_mode(conn: sa.Connection) -> str | None:
    if not _has_table(conn, "schema_version"):
        return None
    return conn.execute(
        sa.select(schema_version.c.mode).order_by(schema_version.c.version.desc()).limit(1)
    ).scalar()


def detect_mode(db: Database) -> Mode:
    """The mode of an existing database (recorded at init), else what init would choose."""
    if db.engine.url.get_backend_name() == "sqlite":
        return "sqlite"
    with db.engine.connect() as conn:
        recorded = recorded_mode(conn)
        if recorded in ("timescaledb", "postgresql"):
            return recorded  # type: ignore[return-value]
        installed = conn.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")).first()
    return "timescaledb" if installed else "postgresql"


def detect_features(db: Database) -> set[str]:
    if db.is_sqlite:
        return set()
    with db.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT extname FROM pg_extension WHERE extname IN ('pg_trgm')")).all()
    return {r[0] for r in rows}


def _choose_postgres_mode(db: Database) -> Mode:
    with db.engine.connect() as conn:
        recorded = recorded_mode(conn)
        if recorded in ("timescaledb", "postgresql"):
            return recorded  # type: ignore[return-value]
        if _has_table(conn, "sentiment_1m"):
            # An unversioned database whose aggregate is a plain table: keep it plain.
            is_table = conn.execute(
                sa.text("SELECT 1 FROM pg_tables "
                        "WHERE tablename = 'sentiment_1m' AND schemaname = current_schema()")
            ).first()
            if is_table:
                return "postgresql"
        installed = conn.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")).first()
        if installed:
            return "timescaledb"
        available = conn.execute(
            sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        ).first()
    if not available:
        return "postgresql"
    try:
        _autocommit(db, ["CREATE EXTENSION IF NOT EXISTS timescaledb"])
    except sa.exc.DBAPIError as exc:
        # Listed but not loadable (not in shared_preload_libraries) or no privilege.
        log.warning("timescaledb is available but cannot be created (%s); using plain PostgreSQL",
                    str(exc.orig).strip())
        return "postgresql"
    return "timescaledb"


def _autocommit(db: Database, statements: list[str]) -> None:
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for stmt in statements:
            conn.exec_driver_sql(stmt)


def _try_create_trgm(db: Database) -> None:
    try:
        _autocommit(db, ["CREATE EXTENSION IF NOT EXISTS pg_trgm"])
    except sa.exc.DBAPIError as exc:
        # Text search still works without it, by sequential scan.
        log.info("pg_trgm unavailable (%s); text search runs without a trigram index", str(exc.orig).strip())


def _check_retention(db: Database) -> None:
    settings = db.settings
    if not settings.timescale_retention:
        return
    keep = interval_literal(settings.timescale_retention, setting="timescale_retention")
    start = interval_literal(settings.timescale_refresh_start_offset,
                             setting="timescale_refresh_start_offset")
    with db.engine.connect() as conn:
        ok = conn.execute(sa.text(f"SELECT {keep} > {start}")).scalar()
    if not ok:
        # A refresh over a range whose raw rows were dropped would empty the aggregate there.
        raise ConfigError("TIMESCALE_RETENTION must be longer than TIMESCALE_REFRESH_START_OFFSET")


def init_schema(db: Database) -> None:
    """Create what is missing and record SCHEMA_VERSION; safe to run again and concurrently."""
    if db.engine.url.get_backend_name() == "sqlite":
        db.mode = "sqlite"
    else:
        db.mode = _choose_postgres_mode(db)
        _try_create_trgm(db)
        if db.is_timescale:
            _check_retention(db)
    db.features = detect_features(db)

    plain_tables = [
        t for t in metadata.sorted_tables
        if not t.info.get("custom_ddl") and not (db.is_timescale and t is sentiment_1m)
    ]
    if db.is_sqlite:
        from db.database import SQLITE_IMMEDIATE

        with db.engine.connect() as conn:
            conn.info[SQLITE_IMMEDIATE] = True
            with conn.begin():
                for stmt in TWEETS_DDL_SQLITE:
                    conn.exec_driver_sql(stmt)
                metadata.create_all(conn, tables=plain_tables)
                _create_missing_indexes(conn, plain_tables)
                _record_version(conn, db.mode)
    else:
        with db.engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_INIT_LOCK})
            for stmt in TWEETS_DDL_POSTGRES:
                conn.exec_driver_sql(stmt)
            if db.is_timescale:
                for stmt in timescale_hypertable_ddl(db.settings):
                    conn.exec_driver_sql(stmt)
            for stmt in TWEETS_INDEXES_POSTGRES:
                conn.exec_driver_sql(stmt)
            if "pg_trgm" in db.features:
                conn.exec_driver_sql(TWEETS_TRGM_INDEX)
            metadata.create_all(conn, tables=plain_tables)
            _create_missing_indexes(conn, plain_tables)
            if db.is_timescale:
                conn.exec_driver_sql(SENTIMENT_1M_CAGG)
            _record_version(conn, db.mode)
        if db.is_timescale:
            with db.engine.connect() as conn:
                enabled = conn.execute(sa.text(
                    "SELECT compression_enabled FROM timescaledb_information.hypertables "
                    "WHERE hypertable_name = 'tweets'"
                )).scalar()
            _autocommit(db, timescale_policy_ddl(db.settings, compression_enabled=bool(enabled)))
    from db.writes import seed_keywords

    seed_keywords(db, list(db.settings.keywords))
    log.info("schema version %s ready (mode=%s)", SCHEMA_VERSION, db.mode)


def _create_missing_indexes(conn: sa.Connection, tables: list[sa.Table]) -> None:
    """create_all skips the indexes of tables that exist already; add the ones defined since."""
    for table in tables:
        for index in table.indexes:
            conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))


def _record_version(conn: sa.Connection, mode: str) -> None:
    present = conn.execute(
        sa.select(schema_version.c.version).where(schema_version.c.version == SCHEMA_VERSION)
    ).first()
    if not present:
        from datetime import UTC

        conn.execute(schema_version.insert().values(
            version=SCHEMA_VERSION, mode=mode, applied_at=datetime.now(UTC)
        ))
