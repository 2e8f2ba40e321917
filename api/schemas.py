"""Response and request bodies, named by role (…Public = what the API returns)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Label = Literal["negative", "neutral", "positive"]

_TWEET_EXAMPLE = {
    "seq": 1042,
    "id": "570306133677760513",
    "keyword": "Virgin America",
    "created_at": "2015-02-24T19:35:52Z",
    "ingested_at": "2026-01-05T10:00:01.250000Z",
    "text": "@VirginAmerica What @user said.",
    "lang": "en",
    "source": "replay",
    "gold_label": "neutral",
    "label": "neutral",
    "p_neg": 0.0,
    "p_neu": 1.0,
    "p_pos": 0.0,
    "score": 0.0,
    "engine": "vader",
}


class Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class TweetPublic(Public):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [_TWEET_EXAMPLE]})

    seq: int = Field(description="Monotonic storage sequence (WebSocket clients resume from it).")
    id: str = Field(description="Tweet id (a string: X ids exceed 2**53).")
    keyword: str
    created_at: datetime
    ingested_at: datetime | None = None
    text: str
    lang: str | None = None
    source: str | None = None
    gold_label: str | None = Field(None, description="Human label when the source has one (replay).")
    label: Label
    p_neg: float | None = None
    p_neu: float | None = None
    p_pos: float | None = None
    score: float = Field(description="Sentiment score in [-1, 1].")
    engine: str | None = None


class TweetsPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "data": [_TWEET_EXAMPLE],
                    "count": 1,
                    "next_cursor": "eyJ0IjoiMjAxNS0wMi0yNFQxOTozNTo1MloifQ",
                }
            ]
        }
    )

    data: list[TweetPublic]
    count: int = Field(description="Number of tweets in this page.")
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` to get the next (older) page; null on the last page."
    )


class TrendPointPublic(Public):
    bucket: datetime = Field(description="Start of the bucket (UTC).")
    n: int
    n_neg: int
    n_neu: int
    n_pos: int
    avg_score: float | None = Field(description="Count-weighted mean score; null for an empty bucket.")


class TrendPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "bucket_seconds": 300,
                    "since": "2015-02-24T10:00:00Z",
                    "until": "2015-02-24T11:00:00Z",
                    "series": {
                        "United": [
                            {
                                "bucket": "2015-02-24T10:00:00Z",
                                "n": 12,
                                "n_neg": 7,
                                "n_neu": 3,
                                "n_pos": 2,
                                "avg_score": -0.31,
                            }
                        ]
                    },
                }
            ]
        }
    )

    bucket_seconds: int = Field(description="Bucket width actually used (coarsened for long ranges).")
    since: datetime
    until: datetime
    series: dict[str, list[TrendPointPublic]]


class SummaryPublic(Public):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "keywords": ["United"],
                    "since": "2015-02-24T10:00:00Z",
                    "until": "2015-02-24T11:00:00Z",
                    "n": 120,
                    "n_neg": 70,
                    "n_neu": 30,
                    "n_pos": 20,
                    "share_neg": 0.583,
                    "share_neu": 0.25,
                    "share_pos": 0.167,
                    "avg_score": -0.22,
                    "tweets_per_minute": 2.0,
                    "prev_n": 100,
                    "prev_avg_score": -0.1,
                    "change_n": 20,
                    "change_avg_score": -0.12,
                }
            ]
        },
    )

    keywords: list[str] | None
    since: datetime
    until: datetime
    n: int
    n_neg: int
    n_neu: int
    n_pos: int
    share_neg: float | None
    share_neu: float | None
    share_pos: float | None
    avg_score: float | None
    tweets_per_minute: float | None
    prev_n: int | None = Field(None, description="Count in the window just before this one.")
    prev_avg_score: float | None = None
    change_n: int | None = None
    change_avg_score: float | None = None


class KeywordCountsPublic(Public):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "term": "United",
                    "tracked": True,
                    "since": None,
                    "until": None,
                    "n": 3822,
                    "n_neg": 2633,
                    "n_neu": 697,
                    "n_pos": 492,
                }
            ]
        },
    )

    term: str
    tracked: bool = Field(
        description="True: counted from the per-minute aggregates of a tracked "
        "keyword; false: a text search over stored tweets."
    )
    since: datetime | None = None
    until: datetime | None = None
    n: int
    n_neg: int
    n_neu: int
    n_pos: int


class KeywordPublic(Public):
    keyword: str
    tracked: bool
    n: int
    last_seen: datetime | None


class KeywordsPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "data": [
                        {"keyword": "United", "tracked": True, "n": 3822, "last_seen": "2015-02-24T19:35:52Z"}
                    ],
                    "count": 1,
                }
            ]
        }
    )

    data: list[KeywordPublic]
    count: int


class KeywordCreate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"keyword": "Delta"}]})

    keyword: str = Field(min_length=1, max_length=200, description="Keyword to start tracking.")


class DatabaseHealth(BaseModel):
    reachable: bool
    mode: str | None = Field(None, description="timescaledb, postgresql or sqlite.")
    url: str | None = Field(None, description="Database URL with the password masked.")
    error: str | None = None


class BrokerHealth(BaseModel):
    configured: bool = Field(description="False when the pipeline runs on the embedded in-process bus.")
    reachable: bool | None = None
    servers: str | None = None
    error: str | None = None


class StagePublic(Public):
    stage: str
    instance: str
    engine: str | None = None
    rate: float | None = Field(None, description="Messages per second at the last heartbeat.")
    lag: int | None = Field(None, description="Consumer lag (messages) at the last heartbeat.")
    last_seen: datetime | None
    age_seconds: float | None = Field(description="Seconds since the last heartbeat.")
    details: dict[str, Any] = Field(default_factory=dict)


class RateLimitPublic(BaseModel):
    instance: str
    until: str | None = Field(None, description="When the X producer resumes, if it said so.")
    details: dict[str, Any] = Field(default_factory=dict)


class HealthPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ok",
                    "database": {
                        "reachable": True,
                        "mode": "timescaledb",
                        "url": "postgresql+psycopg2://sp:***@db/sp",
                        "error": None,
                    },
                    "broker": {"configured": True, "reachable": True, "servers": "kafka:9092", "error": None},
                    "stages": [
                        {
                            "stage": "processor",
                            "instance": "processor-1",
                            "engine": "vader",
                            "rate": 41.5,
                            "lag": 3,
                            "last_seen": "2026-01-05T10:00:00Z",
                            "age_seconds": 2.1,
                            "details": {},
                        }
                    ],
                    "x_rate_limit": None,
                    "ws_clients": 2,
                }
            ]
        }
    )

    status: Literal["ok", "degraded", "down"] = Field(
        description="down: the database is unreachable (HTTP 503); degraded: the broker is unreachable."
    )
    database: DatabaseHealth
    broker: BrokerHealth
    stages: list[StagePublic]
    x_rate_limit: list[RateLimitPublic] | None = Field(
        None, description="X producers paused by the API's rate limit, if any."
    )
    ws_clients: int


class TestEmailRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"recipients": ["ops@example.com"]}]})

    recipients: list[str] | None = Field(
        None, description="Addresses to send a test email to (default: ALERT_EMAIL_TO); must be allowed."
    )


class TestEmailResult(BaseModel):
    sent: bool
    recipients: list[str]
    detail: str | None = None


class Message(BaseModel):
    detail: str


class ValidationProblem(BaseModel):
    """Body of every 422: `detail` is one readable sentence; `errors` lists each bad field."""

    detail: str
    errors: list[dict[str, Any]] = Field(default_factory=list)
