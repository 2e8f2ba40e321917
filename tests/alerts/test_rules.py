"""Rule schemas: metric-specific thresholds, recipients and the allow-list, partial updates."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.alerts.rules import (
    AlertRuleCreate,
    AlertRuleError,
    AlertRuleUpdate,
    RecipientNotAllowed,
    check_recipients,
    effective_recipients,
    is_allowed,
    validation_message,
)


@pytest.mark.parametrize(("metric", "ok", "bad"), [
    ("avg_score_below", [-1, 0, 1], [-1.01, 1.01]),
    ("negative_share_above", [0.01, 0.99], [0, 1, 1.5]),
    ("score_drop", [0.01, 2], [0, -0.5, 2.01]),
    ("volume_spike", [1.01, 50], [1, 0.5]),
])
def test_threshold_ranges(metric, ok, bad):
    for t in ok:
        assert AlertRuleCreate(metric=metric, threshold=t).threshold == t
    for t in bad:
        with pytest.raises(ValidationError, match="threshold"):
            AlertRuleCreate(metric=metric, threshold=t)


def test_defaults_and_clean_input():
    r = AlertRuleCreate(metric="avg_score_below", threshold=-0.5, keyword=" United ",
                        recipients=" Ops@Example.com , ops@example.com")
    assert r.keyword == "United"
    assert (r.window_minutes, r.baseline_minutes, r.min_tweets, r.cooldown_minutes) == (5, 60, 20, 30)
    assert r.recipients == ["ops@example.com"] and r.enabled and not r.notify_recovery


@pytest.mark.parametrize("field", [
    {"threshold": float("nan")}, {"metric": "sentiment"}, {"window_minutes": 0}, {"min_tweets": 0},
    {"recipients": ["a@b.com\r\nBcc: evil@x.com"]}, {"recipients": ["not-an-email"]}, {"typo": 1},
])
def test_invalid_rules(field):
    with pytest.raises(ValidationError):
        AlertRuleCreate(**{"metric": "avg_score_below", "threshold": 0, **field})


def test_allow_list_addresses_and_domains(make_settings):
    s = make_settings(alert_email_to="ops@example.com", alert_allowed_recipients="@corp.io, boss@x.org")
    assert check_recipients(["A@corp.io", "boss@x.org"], s) == ["a@corp.io", "boss@x.org"]
    for bad in (["ops@example.com"], ["a@evilcorp.io"], ["a@sub.corp.io.evil.com"], ["other@x.org"]):
        with pytest.raises(RecipientNotAllowed):
            check_recipients(bad, s)
    assert is_allowed("x@corp.io", ["corp.io"])  # a bare domain reads as @corp.io


def test_allow_list_defaults_to_alert_email_to(make_settings):
    s = make_settings(alert_email_to="ops@example.com,cto@example.com")
    assert check_recipients(["cto@example.com"], s) == ["cto@example.com"]
    with pytest.raises(RecipientNotAllowed):
        check_recipients(["someone@example.com"], s)
    with pytest.raises(RecipientNotAllowed, match="empty"):
        check_recipients(["a@b.com"], make_settings())
    assert effective_recipients([], s) == ["ops@example.com", "cto@example.com"]


def test_context_checks_allow_list(make_settings):
    s = make_settings(alert_email_to="ops@example.com")
    data = {"metric": "avg_score_below", "threshold": 0, "recipients": ["x@spam.com"]}
    with pytest.raises(ValidationError, match="not allowed"):
        AlertRuleCreate.model_validate(data, context={"settings": s})
    assert AlertRuleCreate.model_validate(data).recipients == ["x@spam.com"]  # no context: db checks


def test_update_merges_and_revalidates():
    current = AlertRuleCreate(metric="avg_score_below", threshold=-0.5, keyword="Tesla")
    merged = AlertRuleUpdate(metric="volume_spike", threshold=3).merge(current)
    assert (merged.metric, merged.threshold, merged.keyword) == ("volume_spike", 3, "Tesla")
    with pytest.raises(AlertRuleError, match="volume_spike"):
        AlertRuleUpdate(metric="volume_spike").merge(current)  # -0.5 is no spike factor
    assert AlertRuleUpdate(keyword=None).merge(current).keyword is None  # explicit null = all keywords
    assert AlertRuleUpdate(enabled=False).merge(current).keyword == "Tesla"
    with pytest.raises(ValidationError):
        AlertRuleUpdate(metric="score_drop", threshold=3)


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_empty_keyword_is_an_error_not_every_keyword(blank):
    # Only null means "every tracked keyword"; "" used to widen a rule to all of them silently.
    with pytest.raises(ValidationError) as info:
        AlertRuleCreate(metric="avg_score_below", threshold=0, keyword=blank)
    assert validation_message(info.value) == "keyword is empty; use null for every tracked keyword"
    with pytest.raises(ValidationError, match="use null for every tracked keyword"):
        AlertRuleUpdate(keyword=blank)
    current = AlertRuleCreate(metric="avg_score_below", threshold=0, keyword="United")
    assert AlertRuleUpdate(keyword=None).merge(current).keyword is None
