"""Alert rule and event schemas, shared by the evaluator, the REST API and the dashboard.

Rules are validated here once, so every editor gets the same errors: thresholds are checked against
the metric's range, recipients are syntax-checked and (with `check_recipients`) matched against
ALERT_ALLOWED_RECIPIENTS so a rule editor can never turn StreamPulse into an open mail relay.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.errors import StreamPulseError
from pipeline.settings import Settings

Metric = Literal["avg_score_below", "negative_share_above", "score_drop", "volume_spike"]
METRICS: tuple[Metric, ...] = ("avg_score_below", "negative_share_above", "score_drop", "volume_spike")
# Metrics that compare the window against the baseline just before it.
BASELINE_METRICS: frozenset[str] = frozenset({"score_drop", "volume_spike"})
EventKind = Literal["alert", "recovery"]
EmailStatus = Literal["pending", "sent", "failed", "disabled"]

METRIC_DESCRIPTIONS: dict[str, str] = {
    "avg_score_below": "average score over the window is below the threshold (threshold in [-1, 1])",
    "negative_share_above": "share of negative tweets over the window is above the threshold (0 < t < 1)",
    "score_drop": "window average is at least `threshold` below the baseline's (0 < t <= 2)",
    "volume_spike": "window volume is at least `threshold` times the baseline's rate (t > 1)",
}

EMPTY_KEYWORD = "keyword is empty; use null for every tracked keyword"
MAX_RECIPIENTS = 50
# Deliberately simple: one local part, one domain, no spaces, commas, angle brackets or quotes, so a
# value can never smuggle a second address or a header line into the email.
_EMAIL_RE = re.compile(r"^[^@\s<>,;:\"'()\[\]\\]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


class AlertRuleError(StreamPulseError, ValueError):
    """A rule that cannot be stored as asked (the API answers 422 with this message)."""


class RecipientNotAllowed(AlertRuleError):
    """A recipient that ALERT_ALLOWED_RECIPIENTS does not allow."""


class RuleNotFound(StreamPulseError, LookupError):
    """No alert rule with that id (the API answers 404)."""


def threshold_error(metric: str, threshold: float) -> str | None:
    """Why `threshold` is invalid for `metric`, or None when it is valid."""
    if metric == "avg_score_below" and not -1.0 <= threshold <= 1.0:
        return "threshold for avg_score_below must be in [-1, 1]"
    if metric == "negative_share_above" and not 0.0 < threshold < 1.0:
        return "threshold for negative_share_above must be in (0, 1)"
    if metric == "score_drop" and not 0.0 < threshold <= 2.0:
        return "threshold for score_drop must be in (0, 2]"
    if metric == "volume_spike" and not threshold > 1.0:
        return "threshold for volume_spike must be greater than 1"
    return None


def normalise_recipients(values: Iterable[str]) -> list[str]:
    """Stripped, lower-cased, de-duplicated addresses in their given order; bad syntax raises."""
    out: list[str] = []
    for raw in values:
        if not isinstance(raw, str):
            raise ValueError("recipients must be strings")
        address = raw.strip().lower()
        if not address:
            continue
        if not _EMAIL_RE.match(address):
            raise ValueError(f"not an email address: {raw!r}")
        if address not in out:
            out.append(address)
    if len(out) > MAX_RECIPIENTS:
        raise ValueError(f"at most {MAX_RECIPIENTS} recipients")
    return out


def _allow_entries(allowed: Iterable[str]) -> list[str]:
    entries = []
    for entry in allowed:
        entry = entry.strip().lower()
        if not entry:
            continue
        # "example.com" is read as the domain "@example.com"; "a@example.com" as one address.
        entries.append(entry if "@" in entry else "@" + entry)
    return entries


def is_allowed(address: str, allowed: Iterable[str]) -> bool:
    """True when `address` equals an allowed address or ends with an allowed @domain."""
    address = address.strip().lower()
    for entry in _allow_entries(allowed):
        if entry.startswith("@"):
            if address.endswith(entry):
                return True
        elif address == entry:
            return True
    return False


def check_recipients(recipients: Iterable[str], settings: Settings) -> list[str]:
    """The normalised recipients, or RecipientNotAllowed naming those outside the allow-list."""
    try:
        addresses = normalise_recipients(recipients)
    except ValueError as exc:
        raise AlertRuleError(str(exc)) from exc
    allowed = settings.allowed_recipients
    rejected = [a for a in addresses if not is_allowed(a, allowed)]
    if rejected:
        if not allowed:
            hint = "ALERT_ALLOWED_RECIPIENTS and ALERT_EMAIL_TO are empty, so no recipient is allowed"
        else:
            hint = "set ALERT_ALLOWED_RECIPIENTS (addresses or @domains) to allow them"
        raise RecipientNotAllowed(f"recipients not allowed: {', '.join(rejected)} ({hint})")
    return addresses


def effective_recipients(recipients: Iterable[str] | None, settings: Settings) -> list[str]:
    """Who an alert goes to: the rule's recipients, else ALERT_EMAIL_TO, filtered by the allow-list.

    Filtering again at send time matters because the allow-list may have shrunk since the rule was
    saved."""
    chosen = list(recipients or []) or list(settings.alert_email_to)
    try:
        addresses = normalise_recipients(chosen)
    except ValueError:
        addresses = [a.strip().lower() for a in chosen if _EMAIL_RE.match(a.strip().lower())]
    return [a for a in addresses if is_allowed(a, settings.allowed_recipients)]


class _RuleFields(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_strip_whitespace=True)

    @field_validator("keyword", mode="before", check_fields=False)
    @classmethod
    def _blank_keyword_is_an_error(cls, value: Any) -> Any:
        # Only null means "every tracked keyword". Reading "" that way turned a cleared form field
        # or a client bug into a rule that watches (and emails about) everything.
        if isinstance(value, str) and not value.strip():
            raise ValueError(EMPTY_KEYWORD)
        return value

    @field_validator("recipients", mode="before", check_fields=False)
    @classmethod
    def _recipients_list(cls, value: Any) -> Any:
        if value is None:
            return value
        if isinstance(value, str):  # a comma-separated form field
            value = [part for part in re.split(r"[,;\s]+", value) if part]
        if not isinstance(value, list | tuple):
            raise ValueError("recipients must be a list of email addresses")
        return normalise_recipients(value)

    @model_validator(mode="after")
    def _recipients_allowed(self, info: ValidationInfo) -> Any:
        # Callers that have settings at hand (db.alerts, the dashboard) pass them as validation
        # context; the API's body parsing has none and db.alerts checks again before storing.
        settings = (info.context or {}).get("settings") if info else None
        recipients = getattr(self, "recipients", None)
        if settings is not None and recipients:
            check_recipients(recipients, settings)
        return self


class AlertRuleCreate(_RuleFields):
    """A new alert rule. `keyword: null` evaluates every tracked keyword separately."""

    keyword: str | None = Field(None, max_length=200, description="Tracked keyword; null = each one.")
    metric: Metric = Field(description="What to compare against the threshold.")
    threshold: float = Field(description="Range depends on the metric; see METRIC_DESCRIPTIONS.")
    window_minutes: int = Field(5, ge=1, le=1440, description="Window up to now (partial minute in).")
    baseline_minutes: int = Field(
        60, ge=1, le=10080, description="Baseline just before the window (score_drop, volume_spike)."
    )
    min_tweets: int = Field(
        20, ge=1, le=1_000_000, description="Fewer tweets in the window (and baseline) = no alert."
    )
    cooldown_minutes: int = Field(30, ge=0, le=10080, description="No second alert sooner than this.")
    recipients: list[str] = Field(
        default_factory=list, description="Email addresses; empty = ALERT_EMAIL_TO."
    )
    enabled: bool = True
    notify_recovery: bool = Field(False, description="Also email when the condition stops holding.")

    @field_validator("recipients", mode="after")
    @classmethod
    def _none_is_default(cls, value: list[str] | None) -> list[str]:
        return value or []

    @model_validator(mode="after")
    def _threshold_in_range(self) -> AlertRuleCreate:
        problem = threshold_error(self.metric, self.threshold)
        if problem:
            raise ValueError(problem)
        return self


class AlertRuleUpdate(_RuleFields):
    """A partial update: only the fields sent change; the merged rule is validated as a whole."""

    keyword: str | None = Field(None, max_length=200)
    metric: Metric | None = None
    threshold: float | None = None
    window_minutes: int | None = Field(None, ge=1, le=1440)
    baseline_minutes: int | None = Field(None, ge=1, le=10080)
    min_tweets: int | None = Field(None, ge=1, le=1_000_000)
    cooldown_minutes: int | None = Field(None, ge=0, le=10080)
    recipients: list[str] | None = None
    enabled: bool | None = None
    notify_recovery: bool | None = None

    @model_validator(mode="after")
    def _threshold_in_range(self) -> AlertRuleUpdate:
        # Both given: check now for an early, precise error. Otherwise merge() checks the result.
        if self.metric is not None and self.threshold is not None:
            problem = threshold_error(self.metric, self.threshold)
            if problem:
                raise ValueError(problem)
        return self

    def merge(self, current: AlertRuleCreate | AlertRulePublic) -> AlertRuleCreate:
        """`current` with this update applied, validated as a whole (AlertRuleError if invalid)."""
        data = current.model_dump(include=set(AlertRuleCreate.model_fields))
        data.update(self.model_dump(exclude_unset=True))
        try:
            return AlertRuleCreate.model_validate(data)
        except ValidationError as exc:
            raise AlertRuleError(validation_message(exc)) from exc


class AlertRulePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    keyword: str | None
    metric: Metric
    threshold: float
    window_minutes: int
    baseline_minutes: int
    min_tweets: int
    cooldown_minutes: int
    recipients: list[str]
    enabled: bool
    notify_recovery: bool
    created_at: datetime
    updated_at: datetime


class AlertRulesPublic(BaseModel):
    data: list[AlertRulePublic]
    count: int


class AlertEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    rule_id: int | None
    keyword: str
    kind: EventKind
    fired_at: datetime
    metric: Metric
    threshold: float
    value: float | None
    baseline_value: float | None
    n: int
    n_neg: int
    n_neu: int
    n_pos: int
    window_minutes: int
    message_id: str | None
    email_status: EmailStatus
    email_error: str | None
    attempts: int
    sent_at: datetime | None
    recipients: list[str]


class AlertEventsPublic(BaseModel):
    data: list[AlertEventPublic]
    count: int


def validation_message(exc: ValidationError) -> str:
    """A one-line, user-facing summary of a pydantic ValidationError."""
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"])
        msg = error["msg"].removeprefix("Value error, ")
        # "keyword: keyword is empty" says it twice: a message naming its field stands alone.
        parts.append(f"{loc}: {msg}" if loc and not msg.startswith(loc + " ") else msg)
    return "; ".join(parts)
