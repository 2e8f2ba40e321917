"""Parsing and validation of query parameters that FastAPI's types cannot express alone.

Every failure raises `BadParameter`, which the app turns into a 422 with a readable message, so no
user input can reach the query layer in a shape that would make it fail with a 500.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta

from pipeline.errors import StreamPulseError

BUCKETS: tuple[str, ...] = ("1m", "5m", "15m", "1h")
_WINDOW_RE = re.compile(r"^\s*(\d{1,6})\s*(s|m|min|h|d)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
MIN_WINDOW = timedelta(minutes=1)
MAX_WINDOW = timedelta(days=366)
# Timestamps outside this range are typos, and near datetime's limits adding a window overflows.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
MAX_TERM_CHARS = 200


class BadParameter(StreamPulseError):
    """A query parameter that is syntactically accepted but not meaningful; answered with a 422."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


def parse_window(value: str, *, param: str = "window") -> timedelta:
    """'15m', '1h', '24h', '7d', '90s' -> timedelta, between 1 minute and 366 days."""
    match = _WINDOW_RE.match(value or "")
    if not match:
        raise BadParameter(param, f"{value!r} is not a duration like 15m, 1h, 24h or 7d")
    amount, unit = int(match.group(1)), match.group(2).lower()
    window = timedelta(seconds=amount * _UNIT_SECONDS[unit])
    if not MIN_WINDOW <= window <= MAX_WINDOW:
        raise BadParameter(param, f"{value!r} is outside the allowed range 1m .. 366d")
    return window


def parse_time(value: str | None, *, param: str) -> datetime | None:
    """An ISO 8601 timestamp (a date alone means midnight; no offset means UTC) -> aware UTC."""
    if value is None or value == "":
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadParameter(
            param, f"{value!r} is not an ISO 8601 timestamp, e.g. 2015-02-24T11:35:52Z"
        ) from None
    try:
        parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        raise BadParameter(param, f"{value!r} is out of range") from None
    if not EARLIEST <= parsed < LATEST:
        raise BadParameter(param, f"{value!r} is outside {EARLIEST.year}..{LATEST.year - 1}")
    return parsed


def check_not_future(value: datetime | None, *, param: str, now: datetime) -> None:
    if value is not None and value >= now:
        raise BadParameter(param, f"{value.isoformat()} is in the future (now is {now.isoformat()})")


def check_range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and until <= since:
        raise BadParameter("until", f"until ({until.isoformat()}) must be after since ({since.isoformat()})")


def clean_term(value: str | None, *, param: str) -> str | None:
    """A keyword / search term: trimmed, 1..200 printable characters; empty means 'not given'."""
    if value is None:
        return None
    term = value.strip()
    if not term:
        return None
    if len(term) > MAX_TERM_CHARS:
        raise BadParameter(param, f"is longer than {MAX_TERM_CHARS} characters")
    # NUL and other control characters are rejected by PostgreSQL text and never occur in keywords;
    # format characters (bidi overrides like U+202E, zero-width spaces and joiners) are invisible, so
    # a keyword holding one looks like another keyword but never matches what people type.
    for ch in term:
        if unicodedata.category(ch) in ("Cc", "Cs", "Cf"):
            raise BadParameter(
                param, f"contains the invisible control or format character U+{ord(ch):04X}"
            )
    return term


EMPTY_FILTER = "is empty (leave the parameter out for every keyword)"


def keyword_filter(value: str | None, *, param: str = "keyword") -> str | None:
    """An optional keyword filter: absent (None) means every keyword; given but blank is a mistake
    (a form or script that lost its value), answered 422 rather than silently widened to all."""
    if value is None:
        return None
    term = clean_term(value, param=param)
    if term is None:
        raise BadParameter(param, EMPTY_FILTER)
    return term


def clean_terms(values: list[str] | None, *, param: str) -> list[str] | None:
    """Repeatable `?keyword=a&keyword=b` (comma-separated values are split too); None when the
    parameter is absent. A value that is blank (or only commas) is a 422, not "every keyword"."""
    if not values:
        return None
    terms: list[str] = []
    for value in values:
        if not value.replace(",", "").strip():
            raise BadParameter(param, EMPTY_FILTER)
        for part in value.split(","):
            term = clean_term(part, param=param)
            if term and term.lower() not in {t.lower() for t in terms}:
                terms.append(term)
    if len(terms) > 50:
        raise BadParameter(param, "at most 50 keywords per request")
    return terms or None
