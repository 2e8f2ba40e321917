"""The database handle: one SQLAlchemy engine per process, the storage mode, and schema start-up.

Modes, detected when the database is opened:
- ``timescaledb``: PostgreSQL with the timescaledb extension (installed, or available and creatable);
  ``tweets`` is a hypertable and ``sentiment_1m`` a continuous aggregate.
- ``postgresql``: plain PostgreSQL; ``sentiment_1m`` is a table the writer keeps up to date.
- ``sqlite``: a file, in WAL mode so readers (API, dashboard) read while the ingestor writes.

The mode a database was initialised in is recorded in ``schema_version`` and wins over detection,
so a plain-PostgreSQL database keeps working if the extension is installed later.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from pipeline.errors import ConfigError, StreamPulseError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

Mode = Literal["timescaledb", "postgresql", "sqlite"]

#: Connection.info flag: the next transaction on this SQLite connection takes the write lock at once.
SQLITE_IMMEDIATE = "streampulse_begin_immediate"
SQLITE_BUSY_TIMEOUT_MS = 30_000


class DatabaseError(StreamPulseError):
    """A storage operation failed for a reason other than the database being unreachable."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached (down, wrong URL, refused); callers retry with backoff."""


@dataclass(eq=False)
class Database:
    """A thin holder passed to every db/ function; create it once per process."""

    engine: sa.Engine
    mode: Mode
    settings: Settings
    #: Optional capabilities found at start-up, e.g. {"pg_trgm"}.
    features: set[str] = field(default_factory=set)
    #: PostgreSQL: the connection db.writes keeps between batches, and the lock guarding it.
    writer_connection: Any = field(default=None, repr=False)
    writer_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def is_sqlite(self) -> bool:
        return self.mode == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.mode != "sqlite"

    @property
    def is_timescale(self) -> bool:
        return self.mode == "timescaledb"

    def safe_url(self) -> str:
        """The URL with the password masked, for logs."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        with self.writer_lock:
            if self.writer_connection is not None:
                self.writer_connection.close()
                self.writer_connection = None
        self.engine.dispose()


def make_engine(url: str) -> sa.Engine:
    """An engine configured for StreamPulse: UTC sessions, WAL + busy timeout on SQLite."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = parsed.database
        memory = not path or path == ":memory:"
        if not memory and not path.startswith("file:"):
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            # An in-memory database exists once per connection: share one connection across threads.
            **({"poolclass": sa.pool.StaticPool} if memory else {}),
        )
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql":
        return sa.create_engine(
            parsed,
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=10,
            # UTC sessions, so date_trunc('minute', timestamptz) and returned values are UTC.
            connect_args={"connect_timeout": 10, "options": "-c timezone=UTC"},
        )
    raise ConfigError(f"DATABASE_URL must be postgresql://... or sqlite:///..., got backend {backend!r}")


def _configure_sqlite(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # pysqlite's own transaction handling defers BEGIN oddly; let SQLAlchemy's begin event emit it.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")  # durable enough in WAL mode, much faster commits
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Writers take the lock up front (BEGIN IMMEDIATE) so a read-then-write transaction never
        # fails half way with SQLITE_BUSY; readers use a deferred BEGIN and never block the writer.
        immediate = conn.info.pop(SQLITE_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def ping(db: Database) -> None:
    """Raise DatabaseUnavailable if the database does not answer a trivial query."""
    try:
        with db.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as exc:
        raise DatabaseUnavailable(f"database {db.safe_url()} unreachable: {exc.orig}") from exc


def open_database(settings: Settings, *, url: str | None = None, init: bool = True) -> Database:
    """Create the engine, detect the mode and (when `init`) create or upgrade the schema."""
    engine = make_engine(url or settings.database_url)
    backend = engine.url.get_backend_name()
    db = Database(engine=engine, mode="sqlite" if backend == "sqlite" else "postgresql", settings=settings)
    ping(db)
    try:
        if init:
            init_schema(db)
        else:
            from db import schema

            db.mode = schema.detect_mode(db)
            db.features = schema.detect_features(db)
    except sa.exc.OperationalError as exc:
        raise DatabaseUnavailable(f"database {db.safe_url()} unreachable: {exc.orig}") from exc
    log.info("database %s mode=%s features=%s", db.safe_url(), db.mode, sorted(db.features) or "-")
    return db


def init_schema(db: Database) -> None:
    """Create every table, index and (TimescaleDB) policy that is missing; safe to run repeatedly."""
    from db import schema

    schema.init_schema(db)
