"""Alert settings that Settings accepts one by one but that make no sense for the evaluator; checked
when an evaluator is made (API lifespan, `python -m api.alerts`, `pipeline run`), so a typo shows up
at start-up instead of as an alert that never arrives."""

from __future__ import annotations

import logging

from api.alerts.rules import normalise_recipients
from pipeline.errors import StreamPulseError
from pipeline.settings import Settings

log = logging.getLogger(__name__)


class AlertSettingsInvalid(StreamPulseError):
    """An alert setting the evaluator cannot work with; the message names the variable."""


def check_alert_settings(settings: Settings) -> None:
    """Raise AlertSettingsInvalid for an ALERT_EMAIL_TO entry that is not an address; warn (and say
    which wins) when SMTP_SSL and SMTP_STARTTLS are both on."""
    bad = []
    for entry in settings.alert_email_to:
        try:
            normalise_recipients([entry])
        except ValueError:
            bad.append(entry)
    if bad:
        raise AlertSettingsInvalid(
            "invalid settings: ALERT_EMAIL_TO holds entries that are not email addresses: "
            + ", ".join(repr(b) for b in bad)
            + " (a comma-separated list like ops@example.com,oncall@example.com)"
        )
    if settings.smtp_ssl and settings.smtp_starttls:
        # The mailer connects with implicit TLS when SMTP_SSL is set and never issues STARTTLS then.
        log.warning(
            "SMTP_SSL=true and SMTP_STARTTLS=true are both set: SMTP_SSL wins (implicit TLS, port %s), "
            "STARTTLS is not used; set SMTP_STARTTLS=false to silence this", settings.smtp_port,
        )
