"""`python -m pipeline.health`: the compose healthchecks, on a real SQLite DB and a real HTTP server."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.health import check_stage, check_url

ROOT = Path(__file__).resolve().parents[2]
HOST = socket.gethostname()


@pytest.fixture
def db_env(make_settings, sqlite_url):
    from db.database import open_database

    settings = make_settings(database_url=sqlite_url, heartbeat_interval_seconds=5)
    db = open_database(settings)
    yield settings, db
    db.engine.dispose()


def test_fresh_heartbeat_from_this_host_is_healthy(db_env):
    from db.writes import beat

    settings, db = db_env
    beat(db, stage="processor", instance=f"processor@{HOST}:123", engine="vader", rate=812.5, lag=3)
    result = check_stage(settings, stage="processor", host=HOST)
    assert result.ok, result.message
    assert "vader" in result.message and "812.5/s" in result.message and "lag 3" in result.message


def test_stale_missing_or_foreign_heartbeats_are_unhealthy(db_env):
    from db.writes import beat

    settings, db = db_env
    assert not check_stage(settings, stage="ingestor", host=HOST).ok  # no row yet
    beat(db, stage="ingestor", instance=f"ingestor@{HOST}:9", rate=1.0)
    later = datetime.now(UTC) + timedelta(seconds=16)  # 3 intervals of 5 s, at least 15 s
    stale = check_stage(settings, stage="ingestor", host=HOST, now=later)
    assert not stale.ok and "limit 15s" in stale.message
    # another replica's fresh row does not make this container healthy
    beat(db, stage="processor", instance="processor@other-container:1")
    assert not check_stage(settings, stage="processor", host=HOST).ok
    assert check_stage(settings, stage="processor", host=None).ok


def test_producer_matches_every_source_and_shows_the_rate_limit(db_env):
    from db.writes import beat

    settings, db = db_env
    until = "2025-05-01T12:15:00+00:00"
    beat(db, stage="producer-x", instance=f"producer-x@{HOST}:5",
         details={"state": "rate_limited", "rate_limited_until": until, "fallback_active": True})
    result = check_stage(settings, stage="producer", host=HOST)
    assert result.ok  # paused by X is alive, not broken
    assert f"rate-limited until {until}" in result.message and "mock" in result.message
    assert not check_stage(settings, stage="produce", host=HOST).ok  # prefix only on '-'


def test_unreachable_database_is_unhealthy(make_settings, tmp_path):
    settings = make_settings(database_url="postgresql+psycopg2://u:p@127.0.0.1:1/none")
    result = check_stage(settings, stage="processor", host=HOST)
    assert not result.ok and "database unreachable" in result.message


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_check_url_against_a_real_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert check_url(f"{base}/health").ok
        down = check_url(f"{base}/other")
        assert not down.ok and "503" in down.message
    finally:
        server.shutdown()
        server.server_close()
    assert not check_url(f"{base}/health", timeout=2).ok  # nothing listens any more


def test_command_line_exit_status(db_env, sqlite_url):
    from db.writes import beat

    settings, db = db_env
    env = {**os.environ, "DATABASE_URL": sqlite_url, "HEARTBEAT_INTERVAL_SECONDS": "5"}
    cmd = [sys.executable, "-m", "pipeline.health", "--stage", "ingestor"]
    sick = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert sick.returncode == 1 and sick.stdout.startswith("UNHEALTHY")
    beat(db, stage="ingestor", instance=f"ingestor@{HOST}:77")
    via_cli = [sys.executable, "-m", "pipeline", "health", "--stage", "ingestor"]  # as compose calls it
    well = subprocess.run(via_cli, capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert well.returncode == 0 and well.stdout.startswith("OK"), well.stdout + well.stderr
