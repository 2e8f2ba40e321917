"""One dashboard refresh without Streamlit: the queries a view needs and the figures built from them.

The page calls `load_view` through a cached reader (dashboard/cache.py); the benchmark and the tests
call it with `DirectReader`, so what is measured is what the page runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dashboard import charts
from dashboard.state import Window, bucket_for, match_keyword, needs_anchor_offer, resolve_window

#: Keywords shown in the comparison chart at most (the busiest first).
COMPARISON_LIMIT = 20


@dataclass(frozen=True)
class ViewParams:
    """Everything a refresh depends on; hashable, so it can key a cache."""

    keywords: tuple[str, ...]
    range_label: str = "1 h"
    term: str = ""
    custom: tuple[datetime, datetime] | None = None
    anchor: bool = False
    label: str | None = None
    zone: str = "UTC"
    tweet_limit: int = 50


@dataclass
class ViewData:
    params: ViewParams
    window: Window
    known: list[Any]  # db.queries.KeywordInfo
    term_keyword: str | None  # the stored spelling when the searched term is a known keyword
    latest: datetime | None
    summary: Any  # db.queries.Summary
    trend: Any  # db.queries.Trend for the selected keywords
    comparison: list[charts.KeywordTotal]
    counts: list[Any]  # db.queries.KeywordCounts, the selection then the searched term
    tweets: list[Any]  # db.queries.TweetRow
    heartbeats: list[Any]
    thresholds: list[charts.Threshold]
    offer_anchor: bool
    figures: dict[str, Any] = field(default_factory=dict)


class DirectReader:
    """The db/ functions the dashboard reads through, bound to one Database, uncached."""

    def __init__(self, db) -> None:
        from db import queries

        self.db = db
        self._q = queries

    def keywords(self):
        return self._q.keywords(self.db)

    def latest_tweet_time(self, *, keywords):
        return self._q.latest_tweet_time(self.db, keywords=keywords)

    def summary(self, *, keywords, window, until):
        return self._q.summary(self.db, keywords=keywords, window=window, until=until)

    def trend(self, *, keywords, since, until, bucket):
        return self._q.trend(self.db, keywords=keywords, since=since, until=until, bucket=bucket)

    def keyword_counts(self, *, term, since, until):
        return self._q.keyword_counts(self.db, term=term, since=since, until=until)

    def latest_tweets(self, *, keywords, label, q, limit):
        return self._q.latest_tweets(self.db, keywords=keywords, label=label, q=q, limit=limit).data

    def heartbeats(self):
        return self._q.heartbeats(self.db)

    def rules(self):
        from db import alerts

        return alerts.list_rules(self.db)


def thresholds_from(rules: Sequence[Any]) -> list[charts.Threshold]:
    """The enabled `avg_score_below` rules, as lines for the trend chart."""
    return [
        charts.Threshold(value=float(r.threshold), keyword=r.keyword, rule_id=r.id)
        for r in rules
        if r.metric == "avg_score_below" and r.enabled
    ]


def comparison_keywords(known: Sequence[Any], selected: Sequence[str]) -> list[str]:
    busiest = [k.keyword for k in sorted(known, key=lambda k: -(k.n or 0))[:COMPARISON_LIMIT]]
    return list(dict.fromkeys([*selected, *busiest]))


def load_view(reader, params: ViewParams, *, now: datetime | None = None, build: bool = True) -> ViewData:
    """Run the queries of one refresh and (with `build`) build its four figures."""
    now = now or datetime.now(UTC)
    known = reader.keywords()
    selected = list(params.keywords)
    term_keyword = match_keyword(params.term, [k.keyword for k in known]) if params.term else None

    latest = reader.latest_tweet_time(keywords=selected or None)
    window = resolve_window(params.range_label, now=now, custom=params.custom,
                            anchor=latest if params.anchor and latest else None)
    bucket = bucket_for(params.range_label)

    summary = reader.summary(keywords=selected or None, window=window.length, until=window.until)
    # One trend query serves both the trend chart (the selection) and the comparison (the busiest).
    wanted = comparison_keywords(known, selected)
    trend_all = reader.trend(keywords=wanted, since=window.since, until=window.until, bucket=bucket) \
        if wanted else None
    # No selection means every keyword, as in the KPIs: chart the busiest ones then.
    trend = _subset(trend_all, selected or wanted, window)
    comparison = charts.totals(trend_all) if trend_all else []

    count_terms = list(selected)
    if params.term and not any(t.casefold() == params.term.casefold() for t in count_terms):
        count_terms.append(params.term)
    counts = [reader.keyword_counts(term=t, since=window.since, until=window.until) for t in count_terms]

    # An untracked term is a text search over the stored tweets; a known one is the selection itself.
    text_query = params.term if params.term and term_keyword is None else None
    tweets = reader.latest_tweets(keywords=selected or None, label=params.label, q=text_query,
                                  limit=params.tweet_limit)
    heartbeats = reader.heartbeats()
    thresholds = thresholds_from(reader.rules())

    data = ViewData(
        params=params, window=window, known=known, term_keyword=term_keyword, latest=latest,
        summary=summary, trend=trend, comparison=comparison, counts=counts, tweets=tweets,
        heartbeats=heartbeats, thresholds=thresholds,
        # A custom range is where the user put it: moving it to the latest tweet is not offered.
        offer_anchor=params.custom is None
        and needs_anchor_offer(n_in_window=summary.n, latest=latest, window=window),
    )
    if build:
        data.figures = build_figures(data)
    return data


@dataclass
class _Trend:
    bucket_seconds: int
    since: datetime
    until: datetime
    series: dict[str, list[Any]]


def _subset(trend_all, selected: Sequence[str], window: Window):
    if trend_all is None:
        return _Trend(bucket_seconds=60, since=window.since, until=window.until, series={})
    series = {k: v for k, v in trend_all.series.items() if k in set(selected)}
    return _Trend(bucket_seconds=trend_all.bucket_seconds, since=trend_all.since, until=trend_all.until,
                  series=series)


def revision_of(params: ViewParams) -> str:
    """Plotly's uirevision: unchanged while the user looks at the same view, so zoom survives a
    refresh; a new selection or range resets the axes."""
    return "|".join([params.range_label, ",".join(params.keywords), str(params.anchor), params.zone,
                     repr(params.custom)])


def build_figures(data: ViewData) -> dict[str, Any]:
    revision = revision_of(data.params)
    colours = charts.keyword_colours([*(k.keyword for k in data.known), *data.params.keywords])
    zone = data.params.zone
    return {
        "trend": charts.trend_figure(data.trend, zone=zone, thresholds=data.thresholds,
                                     revision=revision, colours=colours),
        "volume": charts.volume_figure(data.trend, zone=zone, revision=revision),
        "labels": charts.label_figure(data.summary, revision=revision),
        "comparison": charts.comparison_figure(data.comparison, selected=data.params.keywords,
                                               revision=revision, colours=colours),
    }


def window_seconds(window: Window) -> float:
    return max(window.length / timedelta(seconds=1), 1.0)
