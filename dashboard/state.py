"""Dashboard logic that needs no Streamlit: time windows, time zones, keyword matching, the status
line and the tweets table. The views call these; the tests and the benchmark call them directly."""

from __future__ import annotations

import csv
import io
import math
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: The time ranges of the sidebar, with the bucket that gives each a readable number of points.
RANGES: dict[str, timedelta | None] = {
    "15 min": timedelta(minutes=15),
    "1 h": timedelta(hours=1),
    "6 h": timedelta(hours=6),
    "24 h": timedelta(hours=24),
    "7 days": timedelta(days=7),
    "Custom": None,
}
RANGE_BUCKETS: dict[str, str] = {"15 min": "1m", "1 h": "1m", "6 h": "5m", "24 h": "15m", "7 days": "1h"}
DEFAULT_RANGE = "1 h"
REFRESH_CHOICES: tuple[float, ...] = (2.0, 5.0, 10.0, 30.0, 60.0)

PRODUCER_HINT = "python -m pipeline produce --source mock"
RUN_HINT = "make run"


@dataclass(frozen=True)
class Window:
    """The time window the page shows: [since, until), UTC, and how it was chosen."""

    since: datetime
    until: datetime
    label: str
    #: True when the window was moved to end at the latest stored tweet instead of now.
    anchored: bool = False

    @property
    def length(self) -> timedelta:
        return self.until - self.since


def floor_second(moment: datetime) -> datetime:
    """`moment` without its fraction of a second, so queries issued within one second share a cache
    entry (the cache is keyed by the query's parameters)."""
    return moment.replace(microsecond=0)


def resolve_window(range_label: str, *, now: datetime, custom: tuple[datetime, datetime] | None = None,
                   anchor: datetime | None = None) -> Window:
    """The window for a sidebar range. `anchor` (the latest stored tweet) replaces `now` as the end
    when the user chose to look at a replayed export; custom ranges ignore it."""
    if range_label not in RANGES:
        raise ValueError(f"unknown time range {range_label!r}; choose one of {', '.join(RANGES)}")
    length = RANGES[range_label]
    if length is None:
        if custom is None:
            raise ValueError("a custom time range needs a start and an end")
        since, until = (_as_utc(custom[0]), _as_utc(custom[1]))
        if until <= since:
            raise ValueError("the custom range must end after it starts")
        return Window(since=since, until=until, label="custom range")
    if anchor is not None:
        # Include the anchor tweet itself: the window is half-open, so end one second after it.
        until = floor_second(_as_utc(anchor)) + timedelta(seconds=1)
        return Window(since=until - length, until=until, label=f"{range_label} up to the latest tweet",
                      anchored=True)
    until = floor_second(_as_utc(now))
    return Window(since=until - length, until=until, label=f"last {range_label}")


def bucket_for(range_label: str) -> str | None:
    """The trend bucket for a range; None lets db.queries.trend choose (custom ranges)."""
    return RANGE_BUCKETS.get(range_label)


def needs_anchor_offer(*, n_in_window: int, latest: datetime | None, window: Window) -> bool:
    """True when the window is empty but tweets exist before it (typically a replayed export whose
    timestamps are in the past): then the page offers the same window ending at the latest tweet."""
    return n_in_window == 0 and latest is not None and _as_utc(latest) < window.since and not window.anchored


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# --- time zones ----------------------------------------------------------------------------------

def resolve_timezone(*, setting: str | None, browser: str | None) -> str:
    """The default zone: DASHBOARD_TZ when set and valid, else the browser's, else UTC."""
    for candidate in (setting, browser):
        if candidate and zone_or_none(candidate) is not None:
            return candidate
    return "UTC"


def zone_or_none(name: str) -> tzinfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def to_zone(moment: datetime | None, zone: str) -> datetime | None:
    if moment is None:
        return None
    return _as_utc(moment).astimezone(zone_or_none(zone) or UTC)


def fmt_time(moment: datetime | None, zone: str, *, with_date: bool = True) -> str:
    local = to_zone(moment, zone)
    if local is None:
        return "never"
    return local.strftime("%Y-%m-%d %H:%M:%S %Z" if with_date else "%H:%M:%S")


def fmt_age(moment: datetime | None, *, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = max(0.0, (now - _as_utc(moment)).total_seconds())
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:,.0f} days ago"


# --- keywords ------------------------------------------------------------------------------------

def match_keyword(term: str, known: Iterable[str]) -> str | None:
    """The stored spelling of `term` when it names a known keyword (case-insensitive), else None."""
    wanted = term.strip().casefold()
    if not wanted:
        return None
    for keyword in known:
        if keyword.casefold() == wanted:
            return keyword
    return None


def keywords_from_query(values: Iterable[str], known: Iterable[str]) -> tuple[list[str], list[str]]:
    """The `?keyword=` query parameter (repeatable and/or comma-separated, as the alert email's link
    sends it) as (tracked keywords in their stored spelling, other terms), both de-duplicated
    case-insensitively and in the order given."""
    known = list(known)
    matched: list[str] = []
    others: list[str] = []
    seen: set[str] = set()
    for value in values:
        for part in str(value).split(","):
            term = clean_term(part)
            if not term or term.casefold() in seen:
                continue
            seen.add(term.casefold())
            match = match_keyword(term, known)
            (matched if match is not None else others).append(match or term)
    return matched, others


def default_selection(infos: Sequence[Any], *, limit: int = 4) -> list[str]:
    """The keywords selected on first load: the busiest ones with data, else the tracked ones."""
    with_data = sorted((k for k in infos if k.n), key=lambda k: (-k.n, k.keyword.casefold()))
    if with_data:
        return [k.keyword for k in with_data[:limit]]
    return [k.keyword for k in infos if k.tracked][:limit]


def clean_term(term: str | None) -> str:
    """A search term as typed, trimmed and with inner whitespace collapsed; '' when empty. Not cut
    short: a term that is too long is refused by `term_problem`, never silently shortened."""
    return " ".join((term or "").split())


#: Control (Cc), surrogate (Cs) and format (Cf: zero-width, bidi) characters. api/params.clean_term
#: refuses them all; checked here again so the dashboard never stores one even if that rule moved.
_INVISIBLE = ("Cc", "Cs", "Cf")


def term_problem(term: str | None) -> str | None:
    """Why `term` cannot be searched or tracked, or None when it can: the API's own rules for a
    keyword (api/params.clean_term: not empty, at most 200 characters, no control or format
    characters), so the dashboard never stores what POST /keywords would refuse (422)."""
    from api.params import BadParameter
    from api.params import clean_term as api_clean_term

    try:
        cleaned = api_clean_term(term, param="keyword")
    except BadParameter as exc:
        return f"The keyword {exc.message}."
    if cleaned is None:
        return "The keyword is empty."
    bad = sorted({f"U+{ord(ch):04X}" for ch in cleaned if unicodedata.category(ch) in _INVISIBLE})
    if bad:
        return f"The keyword contains invisible control or format characters ({', '.join(bad[:5])})."
    return None


# --- KPI formatting --------------------------------------------------------------------------------

def fmt_score(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+.3f}"


def fmt_delta(value: float | None, *, digits: int = 3) -> str | None:
    """A KPI delta string; None makes st.metric show no delta (no previous window to compare)."""
    if value is None:
        return None
    return f"{value:+.{digits}f}"


def fmt_share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


# --- status line ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class StatusLine:
    parts: list[str]
    warnings: list[str]

    @property
    def text(self) -> str:
        return " · ".join(self.parts)


#: Heartbeat rows older than this are a previous run's leftovers, not a stage that just went silent.
FORGET_AFTER = timedelta(hours=1)


def is_stopped(heartbeat: Any) -> bool:
    """True when the stage said it shut down cleanly (pipeline/stage.py `mark_stopped` writes
    details {"state": "stopped"} on a clean stop)."""
    from pipeline.stage import STOPPED

    return (heartbeat.details or {}).get("state") == STOPPED


def status_line(*, heartbeats: Sequence[Any], mode: str, latest: datetime | None, now: datetime,
                zone: str, stale_after: timedelta, stored_engines: Sequence[str] = (),
                forget_after: timedelta = FORGET_AFTER) -> StatusLine:
    """Engine and model, DB mode, the last tweet, ingest rate, processing lag and any X rate-limit
    pause, from the stage heartbeats. Only a running stage whose heartbeat is older than
    `stale_after` is warned about as silent; a stage that stopped cleanly is just named as stopped,
    and one not heard of for `forget_after` (an earlier run's row) is left out."""
    parts: list[str] = []
    warnings: list[str] = []
    live = [h for h in heartbeats if h.last_seen is not None and now - _as_utc(h.last_seen) <= stale_after
            and not is_stopped(h)]
    stopped = [h for h in heartbeats if is_stopped(h)]
    silent = [h for h in heartbeats if h not in live and not is_stopped(h)
              and h.last_seen is not None and now - _as_utc(h.last_seen) <= forget_after]

    engines = sorted({h.engine for h in live if h.engine})
    if not engines:
        engines = sorted({h.engine for h in heartbeats if h.engine})
    if engines:
        parts.append("engine " + ", ".join(engines))
    elif stored_engines:
        # No processor is running (e.g. a replayed export): say what scored the stored tweets.
        parts.append("engine " + ", ".join(sorted(set(stored_engines))) + " (of the stored tweets)")
    else:
        parts.append("engine unknown (no processor heartbeat)")
    parts.append(f"DB {mode}")
    parts.append(f"last tweet {fmt_time(latest, zone)} ({fmt_age(latest, now=now)})")

    ingest = [h for h in live if h.stage.startswith("ingest") and h.rate is not None]
    if ingest:
        parts.append(f"ingest {sum(h.rate for h in ingest):.1f} tweets/s")
    lags = [h.lag for h in live if h.lag is not None]
    if lags:
        parts.append(f"lag {max(lags)} msgs")
    for h in live:
        details = h.details or {}
        until = _rate_limit_until(details)
        if until is not None and until > now:
            warnings.append(
                f"X rate limit: the {h.stage} stage is paused until {fmt_time(until, zone)} "
                f"({(until - now).total_seconds():.0f} s)"
            )
        if details.get("fallback_active"):
            warnings.append(f"The {h.stage} stage is filling in with mock tweets (source=mock, never "
                            f"alerted on) while X is unavailable.")
    if stopped:
        parts.append("stopped: " + ", ".join(sorted({h.stage for h in stopped})))
    if not heartbeats:
        warnings.append(f"No pipeline stage has reported yet. Start one with `{RUN_HINT}` "
                        f"or `{PRODUCER_HINT}`.")
    for h in silent:
        warnings.append(f"The {h.stage} stage ({h.instance}) last reported {fmt_age(h.last_seen, now=now)}.")
    return StatusLine(parts=parts, warnings=warnings)


def _rate_limit_until(details: dict) -> datetime | None:
    for key in ("rate_limited_until", "rate_limit_until", "paused_until"):
        value = details.get(key)
        if not value:
            continue
        if isinstance(value, datetime):
            return _as_utc(value)
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
        try:
            return _as_utc(datetime.fromisoformat(str(value)))
        except ValueError:
            continue
    return None


# --- tweets table --------------------------------------------------------------------------------

#: The source (mock / replay / x) comes before the wide text column, so it is seen without
#: scrolling the table sideways: mock and replayed real tweets can share one database.
TWEET_COLUMNS = ("time", "keyword", "source", "label", "score", "text", "engine", "id")
#: What the table shows of them (engine and id are in the CSV only).
TWEET_TABLE_COLUMNS = ("time", "keyword", "source", "label", "score", "text")
LABEL_COLOURS = {"negative": "#d62728", "neutral": "#7f7f7f", "positive": "#2ca02c"}
LABEL_BACKGROUNDS = {"negative": "#fde0e0", "neutral": "#eeeeee", "positive": "#dff3df"}


def tweet_records(rows: Sequence[Any], zone: str) -> list[dict[str, Any]]:
    """Table rows for the latest tweets, times in the chosen zone."""
    return [
        {
            "time": fmt_time(r.created_at, zone),
            "keyword": r.keyword,
            "label": r.label,
            "score": round(float(r.score), 3),
            "text": r.text,
            "source": r.source,
            "engine": r.engine,
            "id": r.id,
        }
        for r in rows
    ]


def tweets_csv(records: Sequence[dict[str, Any]]) -> bytes:
    """The shown rows as CSV (UTF-8 with BOM so spreadsheet programs read the accents)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(TWEET_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")
