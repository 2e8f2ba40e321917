"""`python -m api.alerts` as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from db import alerts as store

ROOT = Path(__file__).resolve().parents[2]


def _cli(args, *, url, tmp_path, **env):
    full = {
        **os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": url, "SENTIMENT_ENGINE": "vader",
        "KEYWORDS": "Tesla", "ALERT_EMAIL_TO": "ops@example.com", **env,
    }
    # cwd outside the repo, so no developer .env leaks in.
    return subprocess.run([sys.executable, "-m", "api.alerts", *args], cwd=tmp_path, env=full,
                          capture_output=True, text=True, timeout=90)


def test_once_while_another_evaluator_holds_the_lease_says_so_and_exits_3(alert_db, tmp_path):
    db = alert_db()
    url = db.settings.database_url
    assert store.acquire_lease(db, name="alert-evaluator", holder="other-host:42:abcd",
                               ttl=timedelta(minutes=10))
    result = _cli(["--once"], url=url, tmp_path=tmp_path)
    assert result.returncode == 3, result.stderr
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1
    assert "another alert evaluator is active" in lines[0] and "other-host:42:abcd" in lines[0]
    assert "lease until" in lines[0]

    store.release_lease(db, name="alert-evaluator", holder="other-host:42:abcd")
    free = _cli(["--once"], url=url, tmp_path=tmp_path)
    assert free.returncode == 0, free.stderr


def test_invalid_alert_email_to_stops_the_evaluator_with_a_clear_error(alert_db, tmp_path):
    db = alert_db()
    url = db.settings.database_url
    result = _cli(["--once"], url=url, tmp_path=tmp_path, ALERT_EMAIL_TO="ops-at-example,")
    assert result.returncode == 2
    assert "ALERT_EMAIL_TO" in result.stderr and "'ops-at-example'" in result.stderr
