"""SMTP sending with the SMTP_* settings: plain, STARTTLS (Gmail: smtp.gmail.com:587 + an app
password) or implicit TLS (SMTP_SSL, port 465); every connection has SMTP_TIMEOUT_SECONDS so a
silent host raises instead of hanging; transient failures are retried with backoff.

Blocking by design (smtplib): the evaluator calls it from its own thread and the API through
`send_test_email_async`. No log line or error message carries the password: errors are scrubbed of
it and of its base64 forms (what AUTH PLAIN / LOGIN put on the wire).
"""

from __future__ import annotations

import asyncio
import base64
import html as html_lib
import logging
import smtplib
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from api.alerts.rules import AlertRuleError, check_recipients
from pipeline.errors import ConfigError, StreamPulseError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_ATTEMPTS = 3


class MailError(StreamPulseError):
    """Sending failed after the retries; the message is safe to log and store (no secrets)."""

    def __init__(self, message: str, *, attempts: int = 1, permanent: bool = False) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.permanent = permanent


class MailDisabled(ConfigError):
    """SMTP_HOST is not set, so nothing can be mailed."""


@dataclass(frozen=True)
class SentEmail:
    message_id: str
    recipients: list[str]
    attempts: int
    refused: dict[str, str]  # recipients the server refused while accepting the others


def secrets_of(settings: Settings) -> list[str]:
    """The strings that must never appear in a log line or a stored error."""
    if settings.smtp_password is None:
        return []
    password = settings.smtp_password.get_secret_value()
    if not password:
        return []
    user = settings.smtp_user or ""
    forms = {
        password,
        base64.b64encode(password.encode()).decode(),
        base64.b64encode(f"\0{user}\0{password}".encode()).decode(),
        base64.b64encode(f"{user}\0{user}\0{password}".encode()).decode(),
    }
    return sorted(forms, key=len, reverse=True)


def scrub(text: str, settings: Settings) -> str:
    for secret in secrets_of(settings):
        text = text.replace(secret, "***")
    return text


def tls_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not settings.smtp_verify_tls:
        # Only for servers with self-signed certificates (tests, lab relays): the link is still
        # encrypted, but the server is not authenticated.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _is_permanent(exc: BaseException) -> bool:
    """Errors a retry in a moment cannot fix (wrong password, 5xx, TLS verification, no STARTTLS)."""
    if isinstance(exc, smtplib.SMTPAuthenticationError | smtplib.SMTPNotSupportedError):
        return True
    if isinstance(exc, ssl.SSLCertVerificationError):
        return True
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(500 <= code < 600 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return 500 <= exc.smtp_code < 600
    return False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        detail = "; ".join(
            f"{rcpt}: {code} {msg.decode(errors='replace') if isinstance(msg, bytes) else msg}"
            for rcpt, (code, msg) in exc.recipients.items()
        )
        return f"SMTPRecipientsRefused: {detail}"
    if isinstance(exc, smtplib.SMTPResponseException):
        msg = exc.smtp_error
        text = msg.decode(errors="replace") if isinstance(msg, bytes) else str(msg)
        return f"{type(exc).__name__}: {exc.smtp_code} {text}"
    if isinstance(exc, TimeoutError):
        return f"timeout: {exc}" if str(exc) else "timeout"
    return f"{type(exc).__name__}: {exc}"


class Mailer:
    """Sends an EmailMessage with the SMTP settings; `send` retries transient failures."""

    def __init__(
        self,
        settings: Settings,
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.settings = settings
        self.attempts = max(1, attempts)
        self._sleep = sleep

    @property
    def enabled(self) -> bool:
        return bool(self.settings.smtp_host)

    @property
    def endpoint(self) -> str:
        s = self.settings
        mode = "ssl" if s.smtp_ssl else "starttls" if s.smtp_starttls else "plain"
        return f"{s.smtp_host}:{s.smtp_port} ({mode})"

    def send(self, message: EmailMessage, recipients: Sequence[str]) -> SentEmail:
        """Send `message` to `recipients` (envelope); MailError after the last failed attempt."""
        if not self.enabled:
            raise MailDisabled("SMTP_HOST is not set; alerts are recorded but not emailed")
        if not recipients:
            raise MailError("no recipients", permanent=True)
        backoff = self.settings.retry_initial_backoff_seconds
        last = "unknown error"
        for attempt in range(1, self.attempts + 1):
            try:
                refused = self._send_once(message, list(recipients))
            except (OSError, smtplib.SMTPException) as exc:  # OSError covers refused, reset, timeout
                last = scrub(_describe(exc), self.settings)
                permanent = _is_permanent(exc)
                log.warning(
                    "email %s to %s: attempt %d/%d failed: %s",
                    message["Message-ID"], self.endpoint, attempt, self.attempts, last,
                )
                if permanent or attempt == self.attempts:
                    raise MailError(last, attempts=attempt, permanent=permanent) from None
                self._sleep(backoff)
                backoff = min(backoff * 2, self.settings.retry_max_backoff_seconds)
            else:
                log.info(
                    "email %s sent via %s to %d recipient(s) on attempt %d",
                    message["Message-ID"], self.endpoint, len(recipients), attempt,
                )
                return SentEmail(str(message["Message-ID"]), list(recipients), attempt, refused)
        raise MailError(last, attempts=self.attempts)  # pragma: no cover - loop always returns/raises

    def _send_once(self, message: EmailMessage, recipients: list[str]) -> dict[str, str]:
        s = self.settings
        timeout = s.smtp_timeout_seconds
        context = tls_context(s)
        # Connecting in the constructor also records the host name TLS verification checks; a
        # failure there closes the socket before raising.
        client: smtplib.SMTP
        if s.smtp_ssl:
            client = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=timeout)
        try:
            client.ehlo()
            if s.smtp_starttls and not s.smtp_ssl:
                # Required, not opportunistic: a server without STARTTLS must not get the password.
                client.starttls(context=context)
                client.ehlo()
            if s.smtp_user:
                password = s.smtp_password.get_secret_value() if s.smtp_password else ""
                client.login(s.smtp_user, password)
            refused = client.send_message(message, from_addr=s.alert_email_from, to_addrs=recipients)
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                pass  # accepted already; a dropped QUIT changes nothing
            return {
                rcpt: f"{code} {msg.decode(errors='replace') if isinstance(msg, bytes) else msg}"
                for rcpt, (code, msg) in refused.items()
            }
        finally:
            client.close()


def build_message(
    settings: Settings,
    *,
    recipients: Sequence[str],
    subject: str,
    text: str,
    html: str | None,
    message_id: str,
    headers: dict[str, str] | None = None,
    date: datetime | None = None,
) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = " ".join(subject.split())  # no CR/LF can reach a header
    message["From"] = settings.alert_email_from
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(date or datetime.now(UTC))
    message["Message-ID"] = message_id
    for name, value in (headers or {}).items():
        message[name] = " ".join(str(value).split())
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


def send_test_email(settings: Settings, recipients: list[str] | None = None) -> SentEmail:
    """Send a short test email (API POST /alerts/test-email, dashboard button). Blocking.

    Recipients default to ALERT_EMAIL_TO and must pass ALERT_ALLOWED_RECIPIENTS
    (RecipientNotAllowed otherwise); MailDisabled without SMTP_HOST; MailError when sending fails.
    """
    addresses = check_recipients(recipients if recipients else settings.alert_email_to, settings)
    if not addresses:
        raise AlertRuleError("no recipients: pass some or set ALERT_EMAIL_TO")
    mailer = Mailer(settings)
    if not mailer.enabled:
        raise MailDisabled("SMTP_HOST is not set; configure SMTP_* to send email")
    now = datetime.now(UTC)
    text = (
        "This is a test email from StreamPulse.\n\n"
        f"Sent {now.isoformat(timespec='seconds')} via {mailer.endpoint} from {settings.alert_email_from}.\n"
        f"Alerts will look like this and link to the dashboard: {settings.dashboard_url}\n"
    )
    html = (
        "<p>This is a test email from <b>StreamPulse</b>.</p>"
        f"<p>Sent {now.isoformat(timespec='seconds')} via {_esc(mailer.endpoint)}.</p>"
        f'<p><a href="{_esc(settings.dashboard_url)}">Open the dashboard</a></p>'
    )
    message = build_message(
        settings, recipients=addresses, subject="[StreamPulse] Test email", text=text, html=html,
        message_id=make_msgid("test", domain="streampulse"), date=now,
    )
    return mailer.send(message, addresses)


async def send_test_email_async(settings: Settings, recipients: list[str] | None = None) -> SentEmail:
    """`send_test_email` in a worker thread, for async callers (never blocks the event loop)."""
    return await asyncio.to_thread(send_test_email, settings, recipients)


def _esc(value: str) -> str:
    return html_lib.escape(value, quote=True)
