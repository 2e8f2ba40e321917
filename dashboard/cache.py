"""Streamlit caches around the db/ layer: one Database per process and URL (st.cache_resource), and
query results for a couple of seconds keyed by their parameters (st.cache_data), so several open
browser tabs refreshing at once cost the database one query each, not one per tab."""

from __future__ import annotations

import streamlit as st

from dashboard.loader import DirectReader
from pipeline.settings import Settings

QUERY_TTL_SECONDS = 2.0


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    """The process's settings, read from the environment and `.env` once, at run time (not import)."""
    from pipeline.settings import get_settings

    return get_settings()


@st.cache_resource(show_spinner=False)
def open_db(url: str, _settings: Settings):
    """The process's Database for `url`. A failure is not cached, so the next rerun tries again."""
    from db.database import open_database

    return open_database(_settings, url=url)


# The leading underscore keeps the (unhashable) Database out of the cache key; `url` stands in for it.
@st.cache_data(ttl=QUERY_TTL_SECONDS, show_spinner=False)
def _keywords(_db, url: str):
    return DirectReader(_db).keywords()


@st.cache_data(ttl=QUERY_TTL_SECONDS, show_spinner=False)
def _latest_tweet_time(_db, url: str, keywords):
    return DirectReader(_db).latest_tweet_time(keywords=keywords)


@st.cache_data(ttl=QUERY_TTL_SECONDS, show_spinner=False)
def _summary(_db, url: str, keywords, window, until):
    return DirectReader(_db).summary(keywords=keywords, window=window, until=until)


@st.cache_data(ttl=QUERY_TTL_SECONDS, show_spinner=False)
def _trend(_db, url: str, keywords, since, until, bucket):
    return DirectReader(_db).trend(keywords=keywords, since=since, until=until, bucket=bucket)


@st.cache_data(ttl=QUERY_TTL_SECONDS, show_spinner=False)
def _keyword_counts(_db, url: str, term, since, until):
    return DirectReader(_db).keyword_counts(term=term, since=since, until=until)


@st.cache_data(ttl=QUERY_TTL_SECONDS, show_spinner=False)
def _latest_tweets(_db, url: str, keywords, label, q, limit):
    return DirectReader(_db).latest_tweets(keywords=keywords, label=label, q=q, limit=limit)


@st.cache_data(ttl=QUERY_TTL_SECONDS, show_spinner=False)
def _heartbeats(_db, url: str):
    return DirectReader(_db).heartbeats()


class CachedReader(DirectReader):
    """DirectReader with each query briefly cached. Alert rules are read fresh: the editor must
    show a rule the moment it was saved."""

    def __init__(self, db, url: str) -> None:
        super().__init__(db)
        self.url = url

    def keywords(self):
        return _keywords(self.db, self.url)

    def latest_tweet_time(self, *, keywords):
        return _latest_tweet_time(self.db, self.url, keywords)

    def summary(self, *, keywords, window, until):
        return _summary(self.db, self.url, keywords, window, until)

    def trend(self, *, keywords, since, until, bucket):
        return _trend(self.db, self.url, keywords, since, until, bucket)

    def keyword_counts(self, *, term, since, until):
        return _keyword_counts(self.db, self.url, term, since, until)

    def latest_tweets(self, *, keywords, label, q, limit):
        return _latest_tweets(self.db, self.url, keywords, label, q, limit)

    def heartbeats(self):
        return _heartbeats(self.db, self.url)


def clear_queries() -> None:
    """Forget cached query results (after a write the user expects to see at once)."""
    for fn in (_keywords, _latest_tweet_time, _summary, _trend, _keyword_counts, _latest_tweets,
               _heartbeats):
        fn.clear()
