"""Logging for every StreamPulse process: plain lines for people, or JSON lines (LOG_JSON=true)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from pipeline.settings import Settings

PLAIN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(threadName)s] %(message)s"

# Libraries that log every reconnect attempt at INFO/WARNING; our own retry line says it once.
_NOISY = ("kafka", "urllib3", "watchdog", "httpx")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, thread, msg (and exc when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "thread": record.threadName,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Settings, *, stream=None) -> None:
    """Configure the root logger once per process from LOG_LEVEL and LOG_JSON."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_json else logging.Formatter(PLAIN_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    level = logging.getLevelName(settings.log_level.upper())
    root.setLevel(level if isinstance(level, int) else logging.INFO)
    for name in _NOISY:
        # kafka-python logs every failed reconnect (with tracebacks) at ERROR; our retry line says it once.
        logging.getLogger(name).setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.CRITICAL)
