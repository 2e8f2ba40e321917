"""Alert settings checked when an evaluator starts."""

from __future__ import annotations

import logging

import pytest

from api.alerts.evaluator import AlertEvaluator
from api.alerts.settings_check import AlertSettingsInvalid, check_alert_settings


def test_invalid_alert_email_to_is_an_error_naming_the_setting(alert_db, make_settings):
    db = alert_db()
    listed = "ops@example.com,oncall-at-example"
    bad = make_settings(database_url=db.settings.database_url, alert_email_to=listed)
    with pytest.raises(AlertSettingsInvalid, match=r"ALERT_EMAIL_TO.*'oncall-at-example'") as info:
        AlertEvaluator(bad, db)
    assert "'ops@example.com'" not in str(info.value)  # only the bad entry is named
    AlertEvaluator(db.settings, db).lease.release()  # a valid list starts


def test_ssl_and_starttls_together_warn_and_say_ssl_wins(make_settings, caplog):
    caplog.set_level(logging.WARNING, logger="api.alerts.settings_check")
    check_alert_settings(make_settings(smtp_ssl=True, smtp_starttls=True, alert_email_to="ops@example.com"))
    [record] = [r for r in caplog.records if r.name == "api.alerts.settings_check"]
    assert record.levelno == logging.WARNING
    text = record.getMessage()
    assert "SMTP_SSL=true and SMTP_STARTTLS=true" in text and "SMTP_SSL wins" in text
    caplog.clear()
    check_alert_settings(make_settings(smtp_ssl=True, smtp_starttls=False, alert_email_to="ops@example.com"))
    check_alert_settings(make_settings(smtp_ssl=False, smtp_starttls=True, alert_email_to="ops@example.com"))
    assert not [r for r in caplog.records if r.name == "api.alerts.settings_check"]
