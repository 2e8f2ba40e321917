"""App lifecycle: no settings read at import, DB down at start-up and mid-run (503 with a reason,
then recovery), the alert evaluator started and stopped with the app, SQLite mode, read keys."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.api.conftest import API_KEY, api_settings
from tests.api.live import ROOT, live_server, make_tweet, wait_for


def test_importing_the_app_reads_no_settings():
    # '*' is refused by Settings: if the module read settings at import, the import would fail.
    env = {**os.environ, "CORS_ORIGINS": "*", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    code = "import api.main; assert api.main.app.title == 'StreamPulse API'"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_database_down_mid_run_gives_503_then_recovers(throwaway_pg):
    with live_server(api_settings(throwaway_pg.url)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/summary").status_code == 200
        throwaway_pg.down()
        for path in ("/summary", "/tweets/latest", "/keywords", "/sentiment-trend"):
            r = c.get(path)
            assert r.status_code == 503, (path, r.text)
            assert r.json()["detail"].startswith("database unavailable") and r.headers["retry-after"]
        health = c.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "down"
        assert health.json()["database"]["error"]
        assert c.get("/metrics").status_code == 200  # a scrape still answers, with database_up 0
        assert "streampulse_database_up 0.0" in c.get("/metrics").text
        throwaway_pg.up()
        wait_for(lambda: c.get("/summary").status_code == 200, 20, 0.3)
        assert c.get("/health").json()["status"] == "ok"


def test_database_down_at_start_up_then_up(throwaway_pg):
    throwaway_pg.down()
    with live_server(api_settings(throwaway_pg.url)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.get("/tweets/latest")
        assert r.status_code == 503 and "unreachable" in r.json()["detail"]
        assert "password" not in r.text.lower()
        assert c.get("/health").json()["database"]["reachable"] is False
        throwaway_pg.up()
        wait_for(lambda: c.get("/tweets/latest").status_code == 200, 20, 0.3)
        wait_for(lambda: srv.state.notifier is not None, 5)

        async def live_feed():
            async with connect(f"{srv.ws_url}/ws/tweets") as ws:
                await ws.recv()
                from db.writes import write_tweets

                tweet = make_tweet(keyword="United", text="late but here")
                await asyncio.to_thread(write_tweets, srv.state.db, [tweet])
                frame = json.loads(await asyncio.wait_for(ws.recv(), 3))
                assert [t["id"] for t in frame["data"]] == [tweet.id]

        asyncio.run(live_feed())


def test_alert_evaluator_runs_with_the_app_and_stops_with_it(pg_url):
    settings = api_settings(pg_url, alerts_enabled=True, alert_check_interval_seconds=0.3)
    srv = live_server(settings)
    with srv as s:
        assert s.state.evaluator is not None
        task = next(t for t in s.state.tasks if t.get_name() == "alert-evaluator")
        assert not task.done()
        loop_task = task
    assert loop_task.done()  # stopped on shutdown, no error left behind
    assert loop_task.exception() is None


def test_missing_evaluator_module_is_a_warning_not_a_crash(pg_url, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="api.main")
    monkeypatch.setitem(sys.modules, "api.alerts.evaluator", None)  # import fails
    with live_server(api_settings(pg_url, alerts_enabled=True)) as srv:
        assert srv.state.evaluator is None
        assert httpx.get(f"{srv.url}/health", timeout=10).status_code == 200
    assert any("alert evaluator is not available" in r.getMessage() for r in caplog.records)


def test_sqlite_mode_serves_rest_and_live_tweets(sqlite_url):
    with live_server(api_settings(sqlite_url)) as srv:
        assert srv.state.db.mode == "sqlite" and not srv.state.notifier.listening

        async def scenario():
            async with connect(f"{srv.ws_url}/ws/tweets?keyword=United") as ws:
                await ws.recv()
                from db.writes import write_tweets

                tweets = [
                    make_tweet(keyword="United", label="negative", score=-0.7),
                    make_tweet(keyword="Delta"),
                ]
                t0 = time.time()
                await asyncio.to_thread(write_tweets, srv.state.db, tweets)
                frame = json.loads(await asyncio.wait_for(ws.recv(), 3))
                assert time.time() - t0 < 1.0
                assert [t["id"] for t in frame["data"]] == [tweets[0].id]

        asyncio.run(scenario())
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            body = c.get("/summary", params={"keyword": "United", "window": "1h"}).json()
            assert body["n"] == 1 and body["n_neg"] == 1
            day = datetime.now(UTC).date().isoformat()
            trend = c.get(
                "/sentiment-trend", params={"keyword": "United", "since": day, "bucket": "1h"}
            ).json()
            assert sum(p["n"] for p in trend["series"]["United"]) == 1


def test_reads_can_require_the_key(pg_url):
    settings = api_settings(pg_url, api_key=API_KEY, api_read_requires_key=True)
    with live_server(settings) as srv, httpx.Client(base_url=srv.url, timeout=10) as c:
        assert c.get("/summary").status_code == 401
        assert c.get("/summary", headers={"X-API-Key": API_KEY}).status_code == 200
        assert c.get("/health").status_code == 401

        async def denied():
            async with connect(f"{srv.ws_url}/ws/tweets") as ws:
                await ws.recv()

        with pytest.raises((InvalidStatus, ConnectionClosed)):
            asyncio.run(denied())

        async def allowed():
            async with connect(f"{srv.ws_url}/ws/tweets", additional_headers={"X-API-Key": API_KEY}) as ws:
                assert json.loads(await ws.recv())["type"] == "hello"

        asyncio.run(allowed())
