"""Keep API keys out of uvicorn's logs.

Clients may pass the key as `?api_key=...` (the documented form for WebSockets, which cannot set
headers from a browser), and uvicorn logs the full request line ("uvicorn.access" for HTTP,
"uvicorn.error" for WebSocket accepts/rejects). A filter on those loggers rewrites the message
and its arguments so only `api_key=***` reaches any handler.
"""

from __future__ import annotations

import logging
import re

# `api_key=<value>` in a query string (also `apikey`, `x-api-key`, any case); the value ends at the
# next separator or quote.
_SECRET_PARAM = re.compile(r"(?i)((?:^|[?&;\s\"'])(?:x[-_]?)?api[-_]?key=)[^&;\s\"'#]*")

LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def redact(text: str) -> str:
    return _SECRET_PARAM.sub(r"\1***", text)


def _redact_value(value: object) -> object:
    return redact(value) if isinstance(value, str) else value


class RedactApiKey(logging.Filter):
    """Rewrites record.msg and each string in record.args; the args keep their shape, because
    uvicorn's AccessFormatter unpacks them by position."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_value(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_value(v) for k, v in record.args.items()}
        return True


def install() -> None:
    """Idempotent: one filter per uvicorn logger (create_app and the lifespan both call it, since
    uvicorn's own logging set-up may run after the app is built)."""
    for name in LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactApiKey) for f in target.filters):
            target.addFilter(RedactApiKey())
