"""Aggregates: GET /sentiment-trend, GET /summary, GET /sentiment/counts (alias /sentiment-counts)."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from api.deps import READ, DatabaseDep
from api.params import (
    BadParameter,
    check_not_future,
    check_range,
    clean_term,
    clean_terms,
    parse_time,
    parse_window,
)
from api.routes.common import READ_RESPONSES, call_db, json_response
from api.schemas import KeywordCountsPublic, SummaryPublic, TrendPublic

router = APIRouter(tags=["sentiment"], dependencies=[READ], responses=READ_RESPONSES)

DEFAULT_TREND_SPAN = timedelta(hours=1)
TIME_DOC = "ISO 8601 (e.g. 2015-02-24T11:35:52Z or 2015-02-24); no offset means UTC."

KeywordsQuery = Annotated[
    list[str] | None,
    Query(description="Keywords (repeat the parameter, or comma-separate).", examples=["United"]),
]
SinceQuery = Annotated[str | None, Query(description="Start (inclusive). " + TIME_DOC, max_length=64)]
UntilQuery = Annotated[str | None, Query(description="End (exclusive). " + TIME_DOC, max_length=64)]


async def _tracked_keywords(db) -> list[str]:
    from db import queries

    infos = await call_db(queries.keywords, db)
    return [i.keyword for i in infos if i.tracked] or [i.keyword for i in infos]


@router.get("/sentiment-trend", response_model=TrendPublic, summary="Sentiment over time per keyword")
async def sentiment_trend(
    db: DatabaseDep,
    keyword: KeywordsQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    bucket: Annotated[
        Literal["1m", "5m", "15m", "1h"] | None,
        Query(
            description="Bucket width; default picks one for the range. Long ranges are coarsened to "
            "at most 2000 buckets per series."
        ),
    ] = None,
) -> Any:
    """Per-keyword series of bucketed counts and count-weighted average score; empty buckets are
    included with zero counts. Default range: the hour up to `until` (default now)."""
    from db import queries

    keywords = clean_terms(keyword, param="keyword")
    start, end = parse_time(since, param="since"), parse_time(until, param="until")
    check_range(start, end)
    if end is None:
        # The range ends now, never in the future: a `since` after now has nothing to show.
        end = datetime.now(UTC)
        check_not_future(start, param="since", now=end)
    if start is None:
        start = end - DEFAULT_TREND_SPAN
    if keywords is None:
        keywords = await _tracked_keywords(db)
    if not keywords:
        return TrendPublic(bucket_seconds=0, since=start, until=end, series={})
    trend = await call_db(queries.trend, db, keywords=keywords, since=start, until=end, bucket=bucket)
    return json_response(trend)


@router.get("/summary", response_model=SummaryPublic, summary="Counts, shares and change over a window")
async def summary(
    db: DatabaseDep,
    keyword: KeywordsQuery = None,
    window: Annotated[
        str,
        Query(
            description="Window length: a number and a unit (s, m, h, d), 1m..366d.",
            examples=["15m", "1h", "24h"],
            max_length=16,
        ),
    ] = "1h",
    until: UntilQuery = None,
) -> Any:
    """The window up to `until` (default now) against the window just before it."""
    from db import queries

    keywords = clean_terms(keyword, param="keyword")
    span = parse_window(window)
    end = parse_time(until, param="until")
    result = await call_db(queries.summary, db, keywords=keywords, window=span, until=end)
    return json_response(result)


async def _counts(db, keyword: str, since: str | None, until: str | None) -> KeywordCountsPublic:
    from db import queries

    term = clean_term(keyword, param="keyword")
    if term is None:
        raise BadParameter("keyword", "is required (a tracked keyword or any search term)")
    start, end = parse_time(since, param="since"), parse_time(until, param="until")
    check_range(start, end)
    counts = await call_db(queries.keyword_counts, db, term=term, since=start, until=end)
    data = asdict(counts) if is_dataclass(counts) else dict(counts)
    return KeywordCountsPublic(**{**data, "since": start, "until": end})


KeywordQuery = Annotated[
    str,
    Query(
        description="A tracked keyword (counted from the aggregates) or any term (text search).",
        examples=["United"],
        max_length=200,
    ),
]


@router.get("/sentiment/counts", response_model=KeywordCountsPublic, summary="Label counts for a keyword")
async def sentiment_counts(
    db: DatabaseDep, keyword: KeywordQuery, since: SinceQuery = None, until: UntilQuery = None
) -> KeywordCountsPublic:
    return await _counts(db, keyword, since, until)


@router.get(
    "/sentiment-counts",
    response_model=KeywordCountsPublic,
    summary="Label counts for a keyword (alias of /sentiment/counts)",
)
async def sentiment_counts_alias(
    db: DatabaseDep, keyword: KeywordQuery, since: SinceQuery = None, until: UntilQuery = None
) -> KeywordCountsPublic:
    return await _counts(db, keyword, since, until)
