"""What every stage shares: a stop flag set by SIGTERM/SIGINT, retry with backoff (one clear log line
per attempt), batch collection with a max size and a max wait, and heartbeats + throughput logs.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.bus.base import BusConsumer, Record
from pipeline.errors import ConfigError, StageStopped
from pipeline.settings import Settings

if TYPE_CHECKING:
    from db.database import Database

logger = logging.getLogger(__name__)
T = TypeVar("T")
STOPPED = "stopped"  # heartbeat details["state"] of a stage that shut down cleanly


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set `stop`, so the stage finishes its batch and exits cleanly.

    A second signal while stopping exits at once: the offsets of the batch in flight are not
    committed, so nothing is lost (it is redelivered).
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def handle(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            logger.warning("received %s again: exiting now", name)
            raise SystemExit(130)
        logger.info("received %s: stopping after the current batch (again to exit now)", name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def instance_name(stage: str) -> str:
    """Heartbeat row key: the stage, host and pid (several stages share a process in `run`)."""
    return f"{stage}@{socket.gethostname()}:{os.getpid()}"


def describe(exc: BaseException) -> str:
    """`Type: first line of the message`, short enough for one log line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


class Backoff:
    """Exponential backoff with jitter, from RETRY_INITIAL_BACKOFF_SECONDS to the max."""

    def __init__(self, settings: Settings) -> None:
        self.initial = settings.retry_initial_backoff_seconds
        self.maximum = max(settings.retry_max_backoff_seconds, self.initial)
        self.current = self.initial

    def next_delay(self) -> float:
        delay = self.current
        self.current = min(self.current * 2, self.maximum)
        # Jitter so that stages restarted together do not hammer the service in step.
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.current = self.initial


def retry(
    action: Callable[[], T],
    *,
    what: str,
    settings: Settings,
    stop: threading.Event,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    give_up_on: tuple[type[BaseException], ...] = (ConfigError, StageStopped),
    attempts: int | None = None,
) -> T:
    """Run `action` until it succeeds, logging one line per failed attempt and backing off.

    Raises StageStopped when `stop` is set while waiting, or the last error after `attempts`.
    """
    backoff = Backoff(settings)
    attempt = 0
    while True:
        if attempt and stop.is_set():  # no new attempt once a stop was requested
            raise StageStopped(f"stopped while retrying: {what}")
        attempt += 1
        try:
            result = action()
        except give_up_on:
            raise
        except retry_on as exc:
            if attempts is not None and attempt >= attempts:
                raise
            if stop.is_set():
                raise StageStopped(f"stopped while retrying: {what}") from exc
            delay = backoff.next_delay()
            logger.warning("%s failed (attempt %d): %s; retrying in %.1fs", what, attempt, describe(exc),
                           delay)
            if stop.wait(delay):
                raise StageStopped(f"stopped while retrying: {what}") from exc
            continue
        if attempt > 1:
            logger.info("%s succeeded after %d attempts", what, attempt)
        return result


def safe_url(url: str) -> str:
    """A database URL with the password masked, for log lines."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL: show only its scheme
        return url.split(":", 1)[0] + "://..."


def open_db(settings: Settings, stop: threading.Event) -> Database:
    """Open (and initialise) the database, retrying with backoff while it is unreachable."""
    from db.database import open_database

    what = f"connect to database {safe_url(settings.database_url)}"
    return retry(lambda: open_database(settings), what=what, settings=settings, stop=stop)


def collect_batch(consumer: BusConsumer, *, max_records: int, max_wait_s: float,
                  stop: threading.Event, idle_poll_s: float = 0.5) -> list[Record]:
    """Up to `max_records` records: wait up to `idle_poll_s` for the first (an empty batch lets the
    caller beat and check `stop`), then at most `max_wait_s` more to fill the batch."""
    if stop.is_set():
        return []
    batch = consumer.poll(max_records=max_records, timeout=idle_poll_s)
    if not batch:
        return batch
    deadline = time.monotonic() + max_wait_s
    while len(batch) < max_records and not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        more = consumer.poll(max_records=max_records - len(batch), timeout=left)
        if not more:
            break
        batch.extend(more)
    return batch


class StageMonitor:
    """Counts what a stage did; every HEARTBEAT_INTERVAL_SECONDS upserts its heartbeat row, and
    every THROUGHPUT_LOG_SECONDS logs one throughput line. A DB that is down only costs a warning."""

    def __init__(self, stage: str, settings: Settings, *, db: Callable[[], Database | None],
                 engine: str | None = None, instance: str | None = None) -> None:
        self.stage = stage
        self.settings = settings
        self.engine = engine
        self.instance = instance or instance_name(stage)
        self._db = db
        self.total = 0
        self.failed = 0
        now = time.monotonic()
        self._started = now
        self._beat_at = now
        self._beat_count = 0
        self._log_at = now
        self._log_count = 0
        self._warned_at = 0.0
        self._beating: threading.Thread | None = None
        self.details: dict[str, Any] = {}

    def add(self, n: int, *, failed: int = 0) -> None:
        self.total += n
        self.failed += failed

    def tick(self, *, lag: int | None = None, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._log_at >= self.settings.throughput_log_seconds:
            span = max(now - self._log_at, 1e-9)
            done = self.total - self._log_count
            logger.info("%s: %d in %.0fs (%.1f/s), %d total, %d dead-lettered", self.stage, done, span,
                        done / span, self.total, self.failed)
            self._log_at, self._log_count = now, self.total
        if force or now - self._beat_at >= self.settings.heartbeat_interval_seconds:
            span = max(now - self._beat_at, 1e-9)
            rate = (self.total - self._beat_count) / span
            self._beat_at, self._beat_count = now, self.total
            if force:
                self.beat(rate=rate, lag=lag)
            elif self._beating is None or not self._beating.is_alive():
                # In the background: a slow or unreachable DB must not stall the stream.
                self._beating = threading.Thread(target=self.beat, kwargs={"rate": rate, "lag": lag},
                                                 name=f"{self.stage}-heartbeat", daemon=True)
                self._beating.start()

    def mark_stopped(self) -> None:
        """On a clean shutdown: the heartbeat row says details["state"] == "stopped" (with
        "stopped_at"), so health checks, /health and the dashboard do not take it for a stale stage."""
        from datetime import UTC, datetime

        self.details = {**self.details, "state": STOPPED, "stopped_at": datetime.now(UTC).isoformat()}
        # A background beat still in flight carries the old details: let it land first, or it
        # would overwrite the "stopped" row just written.
        beating = self._beating
        if beating is not None and beating is not threading.current_thread():
            beating.join(timeout=max(5.0, self.settings.heartbeat_interval_seconds))
        self.beat()

    def beat(self, *, rate: float | None = None, lag: int | None = None) -> None:
        try:
            db = self._db()
            if db is None:
                return
            from db.writes import beat

            beat(db, stage=self.stage, instance=self.instance, engine=self.engine, rate=rate, lag=lag,
                 details={"total": self.total, "dead_lettered": self.failed, **self.details})
        except Exception as exc:  # noqa: BLE001 - a heartbeat must never stop the stage
            now = time.monotonic()
            if now - self._warned_at > 60:
                self._warned_at = now
                logger.warning("%s: heartbeat not recorded: %s", self.stage, describe(exc))
