"""The evaluator as it runs for real: `run(stop)` in a thread, `run_in_background` in an event loop,
a silent SMTP host, AUTH over STARTTLS, no secret in any log line, and `python -m api.alerts`."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

from api.alerts.evaluator import run_in_background
from db import alerts as store
from tests.alerts.conftest import tweets
from tests.conftest import ROOT
from tests.fixtures.smtp import SMTP_PASSWORD

M = timedelta(minutes=1)


def test_run_loop_mails_a_live_burst_and_releases_the_lease(alert_db, write, rule, evaluator, smtp_server):
    db = alert_db(**smtp_server.settings(), alert_check_interval_seconds=0.2)
    rule(db, keyword="Tesla", min_tweets=10, window_minutes=1)
    ev = evaluator(db)
    stop = threading.Event()
    thread = threading.Thread(target=ev.run, args=(stop,), daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        assert smtp_server.received == []
        write(db, tweets("Tesla", start=datetime.now(UTC) - timedelta(seconds=20), count=20,
                         every=timedelta(seconds=1), score=-0.9))
        mails = smtp_server.wait_for(1, timeout=10)
        assert len(mails) == 1 and "Tesla" in mails[0].message["Subject"]
        time.sleep(0.6)  # a few more rounds while the rule holds
        assert len(smtp_server.received) == 1
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert store.lease_holder(db, name=ev.lease.name) is None


def test_run_in_background_never_blocks_the_event_loop(alert_db, write, rule, evaluator, silent_smtp):
    host, port = silent_smtp
    db = alert_db(smtp_host=host, smtp_port=port, smtp_starttls=False, smtp_timeout_seconds=0.5,
                  alert_check_interval_seconds=0.2)
    rule(db, keyword="Tesla", min_tweets=10, window_minutes=1)
    write(db, tweets("Tesla", start=datetime.now(UTC) - timedelta(seconds=20), count=20,
                     every=timedelta(seconds=1), score=-0.9))
    ev = evaluator(db)

    async def scenario():
        stop = asyncio.Event()
        task = asyncio.create_task(run_in_background(ev, stop))
        gaps, last = [], time.monotonic()
        for _ in range(40):  # 2 s of 50 ms ticks while the evaluator waits on a silent SMTP host
            await asyncio.sleep(0.05)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        return gaps

    gaps = asyncio.run(scenario())
    assert max(gaps) < 0.5, max(gaps)
    [event] = store.list_events(db)
    assert event.email_status == "failed" and "timed out" in event.email_error  # timed out, not hung
    assert store.lease_holder(db, name=ev.lease.name) is None


def test_run_in_background_cancel_stops_the_thread(alert_db, evaluator):
    ev = evaluator(alert_db(alert_check_interval_seconds=0.1))

    async def scenario():
        task = asyncio.create_task(run_in_background(ev, asyncio.Event()))
        await asyncio.sleep(0.3)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - started < 5
    assert not ev.lease.held


def test_auth_starttls_alert_and_no_secret_in_logs(alert_db, write, rule, evaluator, smtp_auth_server,
                                                   caplog):
    caplog.set_level(logging.DEBUG)
    db = alert_db(**smtp_auth_server.settings())
    assert db.settings.smtp_verify_tls is False and db.settings.smtp_user
    rule(db, keyword="Tesla", min_tweets=10)
    now = datetime.now(UTC)
    write(db, tweets("Tesla", start=now - 2 * M, count=20, score=-0.9))
    first = evaluator(db)
    [event] = first.evaluate_once(now)
    first.lease.release()
    assert event.email_status == "sent"
    assert len(smtp_auth_server.wait_for(1)) == 1
    # Now a wrong password: the failure is recorded, the secret goes nowhere.
    wrong = SMTP_PASSWORD[::-1]
    db2 = alert_db(**{**smtp_auth_server.settings(), "smtp_password": wrong})  # same database
    rule(db2, keyword="Apple", min_tweets=10)
    write(db2, tweets("Apple", start=now - 2 * M, count=20, score=-0.9))
    [failed] = evaluator(db2).evaluate_once(now)
    assert failed.email_status == "failed" and "535" in failed.email_error
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]  # aiosmtpd's own logger
    assert any(r.name.startswith("api.alerts") for r in ours)
    for record in ours:
        text = record.getMessage() + (str(record.exc_info) if record.exc_info else "")
        assert SMTP_PASSWORD not in text and wrong not in text
    for e in store.list_events(db):
        assert SMTP_PASSWORD not in (e.email_error or "") and wrong not in (e.email_error or "")


def test_cli_once_and_test_email(alert_db, write, rule, smtp_server, db_url):
    db = alert_db()
    rule(db, keyword="Tesla", min_tweets=10)
    write(db, tweets("Tesla", start=datetime.now(UTC) - 2 * M, count=20, score=-0.9))
    env = {
        **os.environ, "DATABASE_URL": db_url, "SMTP_HOST": smtp_server.host,
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_STARTTLS": "false", "ALERT_EMAIL_TO": "ops@example.com", "KEYWORDS": "Tesla,Apple",
    }
    once = subprocess.run([sys.executable, "-m", "api.alerts", "--once"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert once.returncode == 0, once.stderr
    assert '"email_status":"sent"' in once.stdout and '"keyword":"Tesla"' in once.stdout
    test = subprocess.run([sys.executable, "-m", "api.alerts", "test-email"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert test.returncode == 0, test.stderr
    assert "ops@example.com" in test.stdout
    assert len(smtp_server.wait_for(2)) == 2
    refused = subprocess.run([sys.executable, "-m", "api.alerts", "test-email", "--to", "x@evil.org"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "not allowed" in refused.stderr
