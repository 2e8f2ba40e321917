"""The SMTP mailer against real aiosmtpd servers: plain, STARTTLS on a self-signed certificate,
AUTH, implicit TLS, a silent host, retries, and no secret in any log line."""

from __future__ import annotations

import logging
import time

import pytest

from api.alerts.mailer import MailDisabled, Mailer, MailError, build_message, send_test_email
from api.alerts.rules import RecipientNotAllowed
from tests.fixtures.smtp import SMTP_PASSWORD, SMTP_USER
from tests.services import free_port


def _settings(make_settings, server, **extra):
    return make_settings(**{**server.settings(), **extra}, alert_email_to=["ops@example.com"])


def test_plain_test_email(make_settings, smtp_server):
    settings = make_settings(**smtp_server.settings(), alert_email_to="ops@example.com")
    sent = send_test_email(settings)
    got = smtp_server.wait_for(1)
    assert len(got) == 1
    assert got[0].rcpt_tos == ["ops@example.com"]
    assert got[0].message["Message-ID"] == sent.message_id
    assert got[0].message["Subject"] == "[StreamPulse] Test email"
    assert sent.attempts == 1


def test_starttls_self_signed(make_settings, smtp_starttls_server):
    settings = _settings(make_settings, smtp_starttls_server)
    send_test_email(settings, ["ops@example.com"])
    assert len(smtp_starttls_server.wait_for(1)) == 1


def test_starttls_verification_rejects_self_signed(make_settings, smtp_starttls_server):
    settings = _settings(make_settings, smtp_starttls_server, smtp_verify_tls=True)
    with pytest.raises(MailError) as info:
        send_test_email(settings)
    assert info.value.permanent and info.value.attempts == 1
    assert smtp_starttls_server.received == []


def test_starttls_auth_login_and_no_secret_in_logs(make_settings, smtp_auth_server, caplog):
    caplog.set_level(logging.DEBUG)
    settings = _settings(make_settings, smtp_auth_server)
    send_test_email(settings)
    assert len(smtp_auth_server.wait_for(1)) == 1
    bad = make_settings(**{**smtp_auth_server.settings(), "smtp_password": SMTP_PASSWORD + "x"},
                        alert_email_to="ops@example.com")
    with pytest.raises(MailError) as info:
        send_test_email(bad)
    assert info.value.permanent  # a wrong password is not retried
    assert "535" in str(info.value)
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]  # aiosmtpd's own logger
    assert any("attempt 1/3 failed" in r.getMessage() for r in ours)
    for record in ours:
        assert SMTP_PASSWORD not in record.getMessage()
    assert SMTP_PASSWORD not in str(info.value)
    assert SMTP_PASSWORD not in repr(settings)


def test_auth_server_refuses_without_login(make_settings, smtp_auth_server):
    settings = make_settings(**{**smtp_auth_server.settings(), "smtp_user": None, "smtp_password": None},
                             alert_email_to="ops@example.com")
    with pytest.raises(MailError):
        send_test_email(settings)
    assert smtp_auth_server.received == []


def test_implicit_tls(make_settings, smtp_ssl_server):
    send_test_email(_settings(make_settings, smtp_ssl_server))
    assert len(smtp_ssl_server.wait_for(1)) == 1


def test_silent_host_times_out(make_settings, silent_smtp):
    host, port = silent_smtp
    settings = make_settings(smtp_host=host, smtp_port=port, smtp_starttls=False, smtp_timeout_seconds=0.5,
                             alert_email_to="ops@example.com", retry_initial_backoff_seconds=0.05)
    started = time.monotonic()
    with pytest.raises(MailError) as info:
        send_test_email(settings)
    elapsed = time.monotonic() - started
    assert info.value.attempts == 3 and not info.value.permanent
    assert "timed out" in str(info.value)
    assert elapsed < 5, elapsed  # 3 x 0.5 s timeout + backoff, not a hang


def test_server_down_retries_with_backoff(make_settings):
    sleeps: list[float] = []
    settings = make_settings(smtp_host="127.0.0.1", smtp_port=free_port(), smtp_starttls=False,
                             retry_initial_backoff_seconds=0.2, alert_email_to="ops@example.com")
    mailer = Mailer(settings, attempts=4, sleep=sleeps.append)
    message = build_message(settings, recipients=["ops@example.com"], subject="s", text="t", html=None,
                            message_id="<x@streampulse>")
    with pytest.raises(MailError) as info:
        mailer.send(message, ["ops@example.com"])
    assert info.value.attempts == 4
    assert sleeps == [0.2, 0.4, 0.8]
    assert "ConnectionRefusedError" in str(info.value)


def test_test_email_recipient_allow_list(make_settings, smtp_server):
    settings = make_settings(**smtp_server.settings(),
                             alert_email_to="ops@example.com", alert_allowed_recipients="@example.com")
    send_test_email(settings, ["someone@example.com"])
    with pytest.raises(RecipientNotAllowed):
        send_test_email(settings, ["victim@elsewhere.org"])
    assert [r.rcpt_tos for r in smtp_server.wait_for(1)] == [["someone@example.com"]]


def test_test_email_without_smtp_host(make_settings):
    with pytest.raises(MailDisabled):
        send_test_email(make_settings(alert_email_to="ops@example.com"))


def test_login_user_is_sent(make_settings, smtp_auth_server):
    # The AUTH fixture accepts only SMTP_USER/SMTP_PASSWORD, so acceptance proves the login ran.
    settings = _settings(make_settings, smtp_auth_server)
    assert settings.smtp_user == SMTP_USER
    send_test_email(settings)
    assert smtp_auth_server.wait_for(1)[0].mail_from == "streampulse@example.com"
