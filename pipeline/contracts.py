"""Typed message contracts: JSON on the wire, with a schema version; the Kafka key is the tweet id."""

from __future__ import annotations

import base64
import hashlib
import json
import unicodedata
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import InvalidMessage

SCHEMA_VERSION = 1
Label = Literal["negative", "neutral", "positive"]
LABELS: tuple[Label, ...] = ("negative", "neutral", "positive")
Source = Literal["x", "replay", "mock"]
# The API's own bounds (api/params.py): a tweet outside them could be stored but never asked for.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)  # exclusive: 2199-12-31 is the last day
# Control, surrogate and format (bidi override, zero-width) characters: POST /keywords refuses them.
BAD_KEYWORD_CATEGORIES = ("Cc", "Cs", "Cf")


def utc(value: datetime) -> datetime:
    """A timezone-aware UTC datetime; naive input is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def derive_id(*, source: str, keyword: str, created_at: datetime | str, text: str) -> str:
    """A deterministic id for a tweet that came without one, so a re-send is recognised."""
    stamp = created_at.isoformat() if isinstance(created_at, datetime) else str(created_at)
    digest = hashlib.sha256("\x1f".join((source, keyword, stamp, text)).encode("utf-8", "replace"))
    return "h" + digest.hexdigest()[:32]


class RawTweet(BaseModel):
    """A tweet as a producer saw it, before scoring."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = SCHEMA_VERSION
    id: str = Field(min_length=1, max_length=128)
    text: str
    created_at: datetime
    keyword: str = Field(min_length=1, max_length=200)
    lang: str | None = None
    source: Source
    gold_label: Label | None = None
    author_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _fill_missing_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("id"):
            needed = ("source", "keyword", "created_at", "text")
            if all(isinstance(data.get(k), str | datetime) for k in needed):
                data = {**data, "id": derive_id(**{k: data[k] for k in needed})}
        return data

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_string(cls, value: Any) -> Any:
        # X ids exceed 2**53, so a JSON number would lose digits in most clients: keep strings.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("created_at")
    @classmethod
    def _created_at_utc(cls, value: datetime) -> datetime:
        value = utc(value)
        if not EARLIEST <= value < LATEST:
            raise ValueError(f"{value.isoformat()} is outside 1970-01-01..2199-12-31")
        return value

    @field_validator("keyword")
    @classmethod
    def _keyword_stripped(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("keyword is empty")
        for ch in value:
            if unicodedata.category(ch) in BAD_KEYWORD_CATEGORIES:
                raise ValueError("keyword contains the invisible control or format character "
                                 f"U+{ord(ch):04X}")
        return value


class AnalyzedTweet(RawTweet):
    """A RawTweet with its sentiment: label, the three probabilities, score in [-1, 1]."""

    label: Label
    p_neg: float = Field(ge=0, le=1)
    p_neu: float = Field(ge=0, le=1)
    p_pos: float = Field(ge=0, le=1)
    score: float = Field(ge=-1, le=1)
    engine: str
    processed_at: datetime

    @field_validator("processed_at")
    @classmethod
    def _processed_at_utc(cls, value: datetime) -> datetime:
        return utc(value)


class DeadLetter(BaseModel):
    """A message a stage could not handle, with the reason and the original bytes (base64)."""

    schema_version: int = SCHEMA_VERSION
    stage: str
    reason: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    payload_b64: str
    failed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def of(cls, *, stage: str, reason: str, payload: bytes, topic: str | None = None,
           partition: int | None = None, offset: int | None = None, key: str | None = None) -> DeadLetter:
        return cls(stage=stage, reason=reason[:2000], topic=topic, partition=partition, offset=offset,
                   key=key, payload_b64=base64.b64encode(payload).decode("ascii"))

    @property
    def payload(self) -> bytes:
        return base64.b64decode(self.payload_b64)


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json().encode("utf-8")


def _decode(payload: bytes, model: type[BaseModel]) -> Any:
    try:
        data = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidMessage(f"payload is not UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise InvalidMessage(f"payload is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidMessage(f"payload is a JSON {type(data).__name__}, not an object")
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise InvalidMessage(f"unsupported schema_version {version!r} (expected {SCHEMA_VERSION})")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidMessage(f"invalid {model.__name__}: {errors}") from exc


def decode_raw(payload: bytes) -> RawTweet:
    """Parse a raw_tweets message, or raise InvalidMessage with a readable reason."""
    return _decode(payload, RawTweet)


def decode_analyzed(payload: bytes) -> AnalyzedTweet:
    """Parse an analyzed_tweets message, or raise InvalidMessage with a readable reason."""
    return _decode(payload, AnalyzedTweet)


def decode_dead_letter(payload: bytes) -> DeadLetter:
    return _decode(payload, DeadLetter)
