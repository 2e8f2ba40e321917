"""The query layer: every read the API, the dashboard and the alert engine make.

Rules kept throughout: keyword-only arguments after the Database, typed results, bound parameters
only, and bounded result sizes (limits are clamped; aggregation happens in SQL).
Keywords match case-insensitively (lower(keyword), with expression indexes to match).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from db import schema
from db.database import Database
from pipeline.contracts import LABELS, utc

MAX_PAGE = 500
MAX_TAIL = 5000
MAX_BUCKETS = 2000
MAX_KEYWORDS = 100
BUCKETS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600}
#: Coarser steps chosen automatically when a range would exceed MAX_BUCKETS.
_LADDER = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)

T = schema.tweets
S = schema.sentiment_1m


@dataclass
class TweetRow:
    seq: int
    id: str
    keyword: str
    created_at: datetime
    ingested_at: datetime
    text: str
    lang: str | None
    source: str
    gold_label: str | None
    label: str
    p_neg: float
    p_neu: float
    p_pos: float
    score: float
    engine: str


@dataclass
class TweetsPage:
    data: list[TweetRow]
    next_cursor: str | None


@dataclass(slots=True)
class TrendPoint:
    bucket: datetime
    n: int
    n_neg: int
    n_neu: int
    n_pos: int
    avg_score: float | None


@dataclass
class Trend:
    bucket_seconds: int
    since: datetime
    until: datetime
    series: dict[str, list[TrendPoint]]


@dataclass
class Summary:
    keywords: list[str] | None
    since: datetime
    until: datetime
    n: int
    n_neg: int
    n_neu: int
    n_pos: int
    share_neg: float
    share_neu: float
    share_pos: float
    avg_score: float | None
    tweets_per_minute: float
    prev_n: int
    prev_avg_score: float | None
    change_n: int
    change_avg_score: float | None


@dataclass
class KeywordCounts:
    term: str
    tracked: bool
    n: int
    n_neg: int
    n_neu: int
    n_pos: int


@dataclass
class KeywordInfo:
    keyword: str
    tracked: bool
    n: int
    last_seen: datetime | None


@dataclass
class Heartbeat:
    stage: str
    instance: str
    engine: str | None
    rate: float | None
    lag: int | None
    details: dict = field(default_factory=dict)
    last_seen: datetime | None = None


# --- helpers ---------------------------------------------------------------------------------------

_TWEET_COLUMNS = [T.c[name] for name in TweetRow.__dataclass_fields__]


def _tweet(row: sa.Row) -> TweetRow:
    return TweetRow(**row._asdict())


def _lowered(keywords: Sequence[str]) -> list[str]:
    lowered = sorted({k.strip().lower() for k in keywords if k and k.strip()})
    if len(lowered) > MAX_KEYWORDS:
        raise ValueError(f"at most {MAX_KEYWORDS} keywords per query")
    return lowered


def _kw_filter(column: sa.ColumnElement, keywords: Sequence[str] | None) -> list[sa.ColumnElement]:
    if keywords is None:
        return []
    return [sa.func.lower(column).in_(_lowered(keywords))]


def _clamp(limit: int, top: int) -> int:
    return max(1, min(int(limit), top))


def _encode_cursor(created_at: datetime, seq: int) -> str:
    raw = json.dumps([utc(created_at).isoformat(), int(seq)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        stamp, seq = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        when = datetime.fromisoformat(stamp)
        if when.tzinfo is None or not isinstance(seq, int) or isinstance(seq, bool):
            raise ValueError("bad cursor fields")
        return utc(when), seq
    except (ValueError, TypeError, UnicodeError, binascii.Error) as exc:
        raise ValueError(f"invalid cursor {cursor[:40]!r}") from exc


def _epoch_bucket(db: Database, column: sa.ColumnElement, step: int) -> sa.ColumnElement:
    """Start of the `step`-second bucket (seconds since the epoch, UTC) a timestamp falls in."""
    if db.is_sqlite:
        seconds = sa.cast(sa.func.strftime("%s", column), sa.Integer)
        return (seconds // step) * step  # SQLAlchemy renders // as integer division
    # date_part is float8 (EXTRACT is numeric since PostgreSQL 14: much slower to group on).
    seconds = sa.cast(sa.func.date_part("epoch", column), sa.BigInteger)
    return (seconds // step) * step


def _sum_int(column: sa.ColumnElement) -> sa.ColumnElement:
    """sum() of a per-minute count. Summed as integer: PostgreSQL's sum(bigint) accumulates in
    numeric (slow, and Decimal in Python); sum(integer) is a bigint. Per-minute counts fit an int."""
    return sa.func.sum(sa.cast(column, sa.Integer))


def _avg(sum_score: float | None, n: int) -> float | None:
    return float(sum_score) / n if n and sum_score is not None else None


def _now() -> datetime:
    return datetime.now(UTC)


def _floor(when: datetime, step: int) -> datetime:
    epoch = int(utc(when).timestamp())
    return datetime.fromtimestamp(epoch - epoch % step, UTC)


# --- tweets ----------------------------------------------------------------------------------------


def latest_tweets(db: Database, *, keywords: list[str] | None = None, label: str | None = None,
                  q: str | None = None, limit: int = 50, cursor: str | None = None) -> TweetsPage:
    """Newest first (created_at, then seq), keyset-paginated; `cursor` comes from a previous page."""
    if label is not None and label not in LABELS:
        raise ValueError(f"label must be one of {', '.join(LABELS)}")
    limit = _clamp(limit, MAX_PAGE)
    conditions = _kw_filter(T.c.keyword, keywords)
    if label:
        conditions.append(T.c.label == label)
    if q:
        conditions.append(T.c.text.icontains(q, autoescape=True))
    if cursor:
        when, seq = _decode_cursor(cursor)
        conditions.append(sa.tuple_(T.c.created_at, T.c.seq) < sa.tuple_(
            sa.literal(when, schema.UTCDateTime()), sa.literal(seq, sa.BigInteger())))
    stmt = (sa.select(*_TWEET_COLUMNS).where(*conditions)
            .order_by(T.c.created_at.desc(), T.c.seq.desc()).limit(limit + 1))
    with db.engine.connect() as conn:
        rows = [_tweet(r) for r in conn.execute(stmt)]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = _encode_cursor(rows[-1].created_at, rows[-1].seq)
    return TweetsPage(data=rows, next_cursor=next_cursor)


def latest_tweet_time(db: Database, *, keywords: list[str] | None = None) -> datetime | None:
    with db.engine.connect() as conn:
        if keywords is None:
            return conn.execute(sa.select(sa.func.max(T.c.created_at))).scalar()
        # One indexed max() per keyword beats one max() over an IN list.
        found = [
            conn.execute(
                sa.select(sa.func.max(T.c.created_at)).where(sa.func.lower(T.c.keyword) == k)
            ).scalar()
            for k in _lowered(keywords)
        ]
    found = [f for f in found if f is not None]
    return max(found) if found else None


def max_seq(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(T.c.seq), 0))).scalar())


def tweets_after(db: Database, *, after_seq: int, limit: int = 1000) -> list[TweetRow]:
    """Rows with seq > after_seq in seq order (the live tail for WebSocket clients)."""
    stmt = (sa.select(*_TWEET_COLUMNS).where(T.c.seq > int(after_seq))
            .order_by(T.c.seq).limit(_clamp(limit, MAX_TAIL)))
    with db.engine.connect() as conn:
        return [_tweet(r) for r in conn.execute(stmt)]


def _window_conditions(keyword: str | None, since: datetime, until: datetime,
                       exclude_sources: tuple[str, ...]) -> list[sa.ColumnElement]:
    conditions = [T.c.created_at >= since, T.c.created_at < until]
    if keyword is not None:
        conditions.append(sa.func.lower(T.c.keyword) == keyword.strip().lower())
    if exclude_sources:
        conditions.append(T.c.source.not_in(list(exclude_sources)))
    return conditions


def window_stats(db: Database, *, keyword: str | None, since: datetime, until: datetime,
                 exclude_sources: tuple[str, ...] = ()) -> dict:
    """Counts and average score over raw tweets in [since, until) (keyword None = all keywords)."""
    stmt = sa.select(
        sa.func.count(),
        *(sa.func.coalesce(sa.func.sum(sa.case((T.c.label == lab, 1), else_=0)), 0) for lab in LABELS),
        sa.func.sum(T.c.score),
    ).where(*_window_conditions(keyword, since, until, exclude_sources))
    with db.engine.connect() as conn:
        n, n_neg, n_neu, n_pos, total = conn.execute(stmt).one()
    return {"n": int(n), "n_neg": int(n_neg), "n_neu": int(n_neu), "n_pos": int(n_pos),
            "avg_score": _avg(total, int(n))}


def most_negative(db: Database, *, keyword: str | None, since: datetime, until: datetime, limit: int = 3,
                  exclude_sources: tuple[str, ...] = ()) -> list[TweetRow]:
    stmt = (sa.select(*_TWEET_COLUMNS)
            .where(*_window_conditions(keyword, since, until, exclude_sources))
            .order_by(T.c.score.asc(), T.c.created_at.desc()).limit(_clamp(limit, MAX_PAGE)))
    with db.engine.connect() as conn:
        return [_tweet(r) for r in conn.execute(stmt)]


# --- aggregates ------------------------------------------------------------------------------------


def choose_bucket(since: datetime, until: datetime, bucket: str | None) -> int:
    """Bucket width in seconds: the one asked for (or 1m), coarsened until <= MAX_BUCKETS buckets."""
    if bucket is not None and bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {', '.join(BUCKETS)}")
    span = max((until - since).total_seconds(), 1)
    step = BUCKETS[bucket] if bucket else 60
    for candidate in _LADDER:
        if candidate >= step and span / candidate <= MAX_BUCKETS:
            return candidate
    return int(math.ceil(span / MAX_BUCKETS / 86400)) * 86400  # whole days beyond the ladder


def trend(db: Database, *, keywords: list[str], since: datetime, until: datetime,
          bucket: str | None = None) -> Trend:
    """Per keyword, per bucket: counts by label and the count-weighted average score.

    Buckets are aligned to multiples of the width since the epoch (UTC); the series covers every
    bucket from the one containing `since` up to `until` (exclusive), empty ones with zero counts
    and avg_score None. Averages are sum(sum_score) / sum(n) over the 1-minute rows.

    Every point counts its whole aligned bucket, not the requested range: by design the first
    bucket may start before an unaligned `since` (Trend.since reports that start), the last may
    extend past an unaligned `until`, and the current bucket is partial while it is still filling.
    For exact counts over an arbitrary [since, until) use summary() or keyword_counts().
    """
    since, until = utc(since), utc(until)
    if until <= since:
        raise ValueError("until must be after since")
    step = choose_bucket(since, until, bucket)
    start = _floor(since, step)
    wanted = {k.strip().lower(): k for k in keywords if k and k.strip()}
    _lowered(list(wanted))  # bounds the number of series
    series: dict[str, list[TrendPoint]] = {}
    if not wanted:
        return Trend(bucket_seconds=step, since=start, until=until, series=series)
    b = _epoch_bucket(db, S.c.bucket, step).label("b")
    k = sa.func.lower(S.c.keyword).label("k")
    total = [_sum_int(c) for c in (S.c.n, S.c.n_neg, S.c.n_neu, S.c.n_pos)]
    stmt = (
        sa.select(k, b, *total, (sa.func.sum(S.c.sum_score) / sa.cast(total[0], sa.Float)).label("avg"))
        .where(sa.func.lower(S.c.keyword).in_(list(wanted)), S.c.bucket >= start, S.c.bucket < until)
        .group_by(k, b)
    )
    found: dict[str, dict[int, tuple]] = {low: {} for low in wanted}
    with db.engine.connect() as conn:
        rows = conn.execute(stmt).all()  # one fetchall: row-by-row iteration costs 2x here
    for row in rows:
        found[row[0]][row[1]] = row  # ints and a float (or None) from the driver already
    epochs = range(int(start.timestamp()), math.ceil(until.timestamp()), step)
    stamps = [datetime.fromtimestamp(epoch, UTC) for epoch in epochs]  # shared by every series
    for low, original in wanted.items():
        by_epoch = found[low]
        series[original] = [
            TrendPoint(stamp, r[2], r[3], r[4], r[5], r[6]) if (r := by_epoch.get(epoch)) is not None
            else TrendPoint(stamp, 0, 0, 0, 0, None)
            for epoch, stamp in zip(epochs, stamps, strict=True)
        ]
    return Trend(bucket_seconds=step, since=start, until=until, series=series)


_Totals = tuple[int, int, int, int, float | None]


def _ceil_minute(when: datetime) -> datetime:
    floor = _floor(when, 60)
    return floor if floor == when else floor + timedelta(minutes=1)


def _minute_sums(conn: sa.Connection, keywords: list[str] | None, start: datetime | None,
                 end: datetime | None) -> tuple[int, int, int, int, float]:
    """Sums over whole 1-minute buckets in [start, end) (start and end on minute boundaries)."""
    conditions = _kw_filter(S.c.keyword, keywords)
    if start is not None:
        conditions.append(S.c.bucket >= start)
    if end is not None:
        conditions.append(S.c.bucket < end)
    stmt = sa.select(
        *(sa.func.coalesce(_sum_int(c), 0) for c in (S.c.n, S.c.n_neg, S.c.n_neu, S.c.n_pos)),
        sa.func.coalesce(sa.func.sum(S.c.sum_score), 0.0),
    ).where(*conditions)
    n, n_neg, n_neu, n_pos, total = conn.execute(stmt).one()
    return int(n), int(n_neg), int(n_neu), int(n_pos), float(total)


def _raw_sums(conn: sa.Connection, keywords: list[str] | None,
              ranges: list[tuple[datetime, datetime]]) -> tuple[int, int, int, int, float]:
    """Sums over raw tweets in the given [start, end) ranges (the partial edge minutes).

    Each range lies inside one minute, so this reads at most a minute of rows per range through
    the (lower(keyword), created_at) or (created_at) index: bounded work whatever the table size.
    """
    ranges = [(a, b) for a, b in ranges if a < b]
    if not ranges:
        return 0, 0, 0, 0, 0.0
    in_range = sa.or_(*(sa.and_(T.c.created_at >= a, T.c.created_at < b) for a, b in ranges))
    stmt = sa.select(
        sa.func.count(),
        *(sa.func.coalesce(sa.func.sum(sa.case((T.c.label == lab, 1), else_=0)), 0) for lab in LABELS),
        sa.func.coalesce(sa.func.sum(T.c.score), 0.0),
    ).where(in_range, *_kw_filter(T.c.keyword, keywords))
    n, n_neg, n_neu, n_pos, total = conn.execute(stmt).one()
    return int(n), int(n_neg), int(n_neu), int(n_pos), float(total)


def _exact_totals(conn: sa.Connection, keywords: list[str] | None, since: datetime | None,
                  until: datetime | None) -> _Totals:
    """Exact counts and the count-weighted average score over tweets in [since, until).

    `sentiment_1m` only knows whole minutes, so an unaligned window is split: the whole minutes
    strictly inside it come from the aggregate and the partial minute at each end (at most two)
    from raw `tweets`. None means unbounded on that side.
    """
    since = utc(since) if since is not None else None
    until = utc(until) if until is not None else None
    if since is not None and until is not None and until <= since:
        return 0, 0, 0, 0, None
    first = _ceil_minute(since) if since is not None else None  # first whole minute
    last = _floor(until, 60) if until is not None else None  # end of the last whole minute
    if first is not None and last is not None and last <= first:
        # No whole minute inside (the window is within one or two partial minutes): all raw.
        sums = _raw_sums(conn, keywords, [(since, until)])
    else:
        whole = _minute_sums(conn, keywords, first, last)
        edges = []
        if since is not None:
            edges.append((since, first))
        if until is not None:
            edges.append((last, until))
        edge = _raw_sums(conn, keywords, edges)
        sums = tuple(a + b for a, b in zip(whole, edge, strict=True))
    n, n_neg, n_neu, n_pos, total = sums
    return int(n), int(n_neg), int(n_neu), int(n_pos), _avg(total, int(n))


def summary(db: Database, *, keywords: list[str] | None, window: timedelta,
            until: datetime | None = None) -> Summary:
    """Exact totals over [until - window, until) and over the previous window of the same length.

    Whole minutes come from the 1-minute aggregate and the partial minutes at the edges from raw
    tweets, so an unaligned `until` (the default, now) counts exactly the tweets in each window.
    tweets_per_minute is n divided by the window's length in minutes.
    """
    if window <= timedelta(0):
        raise ValueError("window must be positive")
    until = utc(until) if until else _now()
    since = until - window
    with db.engine.connect() as conn:
        n, n_neg, n_neu, n_pos, avg = _exact_totals(conn, keywords, since, until)
        prev_n, _, _, _, prev_avg = _exact_totals(conn, keywords, since - window, since)
    share = (lambda x: x / n) if n else (lambda x: 0.0)
    return Summary(
        keywords=list(keywords) if keywords is not None else None, since=since, until=until,
        n=n, n_neg=n_neg, n_neu=n_neu, n_pos=n_pos,
        share_neg=share(n_neg), share_neu=share(n_neu), share_pos=share(n_pos),
        avg_score=avg, tweets_per_minute=n / (window.total_seconds() / 60),
        prev_n=prev_n, prev_avg_score=prev_avg, change_n=n - prev_n,
        change_avg_score=(avg - prev_avg) if avg is not None and prev_avg is not None else None,
    )


def minute_aggregate(db: Database, *, keywords: list[str] | None, at: datetime | None = None) -> list[dict]:
    """The 1-minute aggregate rows of the minute containing `at` (default now)."""
    minute = _floor(at or _now(), 60)
    stmt = (sa.select(S.c.bucket, S.c.keyword, S.c.n, S.c.n_neg, S.c.n_neu, S.c.n_pos, S.c.sum_score)
            .where(S.c.bucket == minute, *_kw_filter(S.c.keyword, keywords))
            .order_by(S.c.keyword).limit(1000))
    with db.engine.connect() as conn:
        return [
            {"bucket": r.bucket, "keyword": r.keyword, "n": int(r.n), "n_neg": int(r.n_neg),
             "n_neu": int(r.n_neu), "n_pos": int(r.n_pos), "avg_score": _avg(r.sum_score, int(r.n))}
            for r in conn.execute(stmt)
        ]


# --- keywords ----------------------------------------------------------------------------------------


def _tracked(conn: sa.Connection) -> list[sa.Row]:
    K = schema.tracked_keywords
    return conn.execute(sa.select(K.c.keyword, K.c.added_at).order_by(K.c.added_at, K.c.keyword)).all()


def keyword_counts(db: Database, *, term: str, since: datetime | None = None,
                   until: datetime | None = None) -> KeywordCounts:
    """A tracked keyword's counts from the aggregate, any other term's from a text search."""
    if not term or not term.strip():
        raise ValueError("term is empty")
    term = term.strip()
    low = term.lower()
    with db.engine.connect() as conn:
        tracked = any(r.keyword.lower() == low for r in _tracked(conn))
        if tracked:
            # Exact over [since, until): whole minutes from the aggregate, edge minutes from raw rows.
            n, n_neg, n_neu, n_pos, _ = _exact_totals(conn, [low], since, until)
        else:
            conditions = [T.c.text.icontains(term, autoescape=True)]
            if since:
                conditions.append(T.c.created_at >= utc(since))
            if until:
                conditions.append(T.c.created_at < utc(until))
            # A tweet stored under several keywords is one tweet: count distinct ids per label.
            stmt = sa.select(
                sa.func.count(sa.distinct(T.c.id)),
                *(sa.func.count(sa.distinct(sa.case((T.c.label == lab, T.c.id)))) for lab in LABELS),
            ).where(*conditions)
            n, n_neg, n_neu, n_pos = conn.execute(stmt).one()
    return KeywordCounts(term=term, tracked=tracked, n=int(n), n_neg=int(n_neg), n_neu=int(n_neu),
                         n_pos=int(n_pos))


def keywords(db: Database) -> list[KeywordInfo]:
    """Tracked keywords plus keywords seen in data (case-insensitively merged), with volume."""
    k = sa.func.lower(S.c.keyword).label("k")
    stmt = (sa.select(k, sa.func.min(S.c.keyword), sa.func.sum(S.c.n), sa.func.max(S.c.bucket).label("last"))
            .group_by(k).limit(10_000))
    with db.engine.connect() as conn:
        tracked = _tracked(conn)
        seen = {low: (name, int(n), last) for low, name, n, last in conn.execute(stmt)}
    out: list[KeywordInfo] = []
    for row in tracked:
        name, n, last = seen.pop(row.keyword.lower(), (row.keyword, 0, None))
        out.append(KeywordInfo(keyword=row.keyword, tracked=True, n=n, last_seen=_last_seen(last)))
    for name, n, last in sorted(seen.values(), key=lambda v: -v[1]):
        out.append(KeywordInfo(keyword=name, tracked=False, n=n, last_seen=_last_seen(last)))
    return out


def _last_seen(bucket: datetime | str | None) -> datetime | None:
    if bucket is None:
        return None
    if isinstance(bucket, str):  # SQLite: max() over text loses the column type
        bucket = datetime.fromisoformat(bucket)
    return utc(bucket)  # start of the last minute with data


# --- operations ------------------------------------------------------------------------------------


def heartbeats(db: Database) -> list[Heartbeat]:
    H = schema.stage_heartbeats
    with db.engine.connect() as conn:
        rows = conn.execute(sa.select(H).order_by(H.c.stage, H.c.instance).limit(1000)).all()
    return [Heartbeat(stage=r.stage, instance=r.instance, engine=r.engine, rate=r.rate, lag=r.lag,
                      details=r.details or {}, last_seen=r.last_seen) for r in rows]


def dead_letters(db: Database, *, limit: int = 100) -> list[dict]:
    D = schema.dead_letters
    with db.engine.connect() as conn:
        rows = conn.execute(sa.select(D).order_by(D.c.seq.desc()).limit(_clamp(limit, MAX_PAGE))).all()
    return [dict(r._mapping) for r in rows]
