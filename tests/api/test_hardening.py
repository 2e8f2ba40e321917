"""Defects a newcomer found: empty alert keywords, the key checked after the body, WebSocket close
codes, trend ranges ending in the future, invisible characters in keywords, unbounded bodies,
hard-to-read 422s and a bad setting's start-up error. Live uvicorn over real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from api.alerts.rules import EMPTY_KEYWORD
from api.guards import MAX_BODY_BYTES
from tests.api.conftest import API_KEY, api_settings
from tests.api.live import ROOT, live_server
from tests.fixtures.postgres import create_database, drop_database

KEY = {"X-API-Key": API_KEY}
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def srv(pg_server_url):
    url = create_database(pg_server_url)
    try:
        with live_server(api_settings(url, api_key=API_KEY)) as server:
            yield server
    finally:
        drop_database(pg_server_url, url)


@pytest.fixture
def client(srv):
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        yield c


# 1. An empty keyword is an error; only null means every keyword.


@pytest.mark.parametrize("blank", ["", "   "])
def test_empty_rule_keyword_is_422_on_create_and_update(client, blank):
    r = client.post(
        "/alerts/rules", json={"keyword": blank, "metric": "avg_score_below", "threshold": 0}, headers=KEY
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == EMPTY_KEYWORD

    r = client.post(
        "/alerts/rules", json={"keyword": "United", "metric": "avg_score_below", "threshold": 0}, headers=KEY
    )
    assert r.status_code == 201, r.text
    rule_id = r.json()["id"]
    r = client.put(f"/alerts/rules/{rule_id}", json={"keyword": blank}, headers=KEY)
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == EMPTY_KEYWORD
    assert client.get(f"/alerts/rules/{rule_id}").json()["keyword"] == "United"

    r = client.put(f"/alerts/rules/{rule_id}", json={"keyword": None}, headers=KEY)
    assert r.status_code == 200 and r.json()["keyword"] is None  # JSON null: every keyword
    assert client.delete(f"/alerts/rules/{rule_id}", headers=KEY).status_code == 204


def test_null_rule_keyword_still_means_every_keyword(client):
    r = client.post(
        "/alerts/rules", json={"keyword": None, "metric": "avg_score_below", "threshold": 0}, headers=KEY
    )
    assert r.status_code == 201 and r.json()["keyword"] is None
    assert client.delete(f"/alerts/rules/{r.json()['id']}", headers=KEY).status_code == 204


# 2. The key is checked before the body is read.

WRITES = [
    ("POST", "/alerts/rules"),
    ("PUT", "/alerts/rules/1"),
    ("DELETE", "/alerts/rules/1"),
    ("POST", "/keywords"),
    ("POST", "/alerts/test-email"),
]


@pytest.mark.parametrize(("method", "path"), WRITES)
@pytest.mark.parametrize("headers", [{"X-API-Key": "nope"}, {}], ids=["wrong-key", "no-key"])
def test_wrong_key_and_bad_json_is_401_not_422(client, method, path, headers):
    r = client.request(method, path, content=b"{bad", headers={**JSON, **headers})
    assert r.status_code == 401, r.text
    assert r.json()["detail"] == "missing or wrong X-API-Key header"
    assert r.headers["www-authenticate"] == "ApiKey"


def test_right_key_and_bad_json_is_a_readable_422(client):
    r = client.post("/alerts/rules", content=b'{\n  "keyword": "United",\n  bad', headers={**JSON, **KEY})
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == (
        "body: invalid JSON at line 3 column 3 (Expecting property name enclosed in double quotes)"
    )
    r = client.post("/keywords", content=b"{bad", headers={**JSON, **KEY})
    assert r.json()["detail"].startswith("body: invalid JSON at line 1 column 2 (Expecting property name")


def test_unknown_routes_keep_404_and_405_with_a_key_set(client):
    assert client.post("/nope", content=b"{bad", headers=JSON).status_code == 404
    assert client.delete("/keywords").status_code == 405
    assert client.get("/keywords").status_code == 200  # reads need no key


# 3. WebSocket errors: accepted, then closed with the documented code and a reason.


async def _close_of(url: str, **kwargs) -> tuple[int, str]:
    async with connect(url, **kwargs) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
    return info.value.rcvd.code, info.value.rcvd.reason


@pytest.mark.parametrize("path", ["/ws/tweets", "/ws/sentiment"])
@pytest.mark.parametrize("keyword", ["a%00b", "x" * 300, "%E2%80%AEUnited"])
def test_ws_bad_keyword_closes_1008_with_a_reason(srv, path, keyword):
    code, reason = asyncio.run(_close_of(f"{srv.ws_url}{path}?keyword={keyword}"))
    assert code == 1008
    assert reason.startswith("keyword: ")


def test_ws_wrong_read_key_closes_1008_with_a_reason(pg_url):
    settings = api_settings(pg_url, api_key=API_KEY, api_read_requires_key=True)
    with live_server(settings) as server:
        code, reason = asyncio.run(_close_of(f"{server.ws_url}/ws/tweets?api_key=nope"))
    assert (code, reason) == (1008, "missing or wrong API key")


@pytest.mark.parametrize("path", ["/ws/tweets", "/ws/sentiment"])
def test_ws_database_down_closes_1011_with_a_reason(path):
    settings = api_settings("postgresql+psycopg2://nobody@127.0.0.1:1/none", retry_initial_backoff_seconds=30)
    with live_server(settings) as server:
        assert server.state.db is None
        code, reason = asyncio.run(_close_of(f"{server.ws_url}{path}"))
    assert code == 1011
    assert reason.startswith("database unavailable: ") and len(reason.encode()) <= 123


# 4. The trend range ends now, not in the future.


def _trend(client, **params) -> httpx.Response:
    return client.get("/sentiment-trend", params={"keyword": "United", **params})


def test_trend_since_without_until_ends_now(client):
    before = datetime.now(UTC)
    since = (before - timedelta(minutes=20)).replace(microsecond=0)
    r = _trend(client, since=since.isoformat())
    assert r.status_code == 200, r.text
    body = r.json()
    until = datetime.fromisoformat(body["until"].replace("Z", "+00:00"))
    start = datetime.fromisoformat(body["since"].replace("Z", "+00:00"))
    assert since - timedelta(seconds=body["bucket_seconds"]) < start <= since  # floored to a bucket
    assert before <= until <= datetime.now(UTC)  # was since + 1 h, 40 minutes in the future


def test_trend_defaults_to_the_last_hour(client):
    before = datetime.now(UTC)
    body = _trend(client).json()
    until = datetime.fromisoformat(body["until"].replace("Z", "+00:00"))
    since = datetime.fromisoformat(body["since"].replace("Z", "+00:00"))
    assert before <= until <= datetime.now(UTC)
    # An hour back from now, the start floored to a bucket.
    assert timedelta(hours=1) <= until - since < timedelta(hours=1, seconds=body["bucket_seconds"])


def test_trend_since_in_the_future_is_422(client):
    future = (datetime.now(UTC) + timedelta(hours=2)).replace(tzinfo=None).isoformat()
    r = _trend(client, since=future)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("since: ") and "in the future" in r.json()["detail"]


# 5. Invisible format characters in keywords.


@pytest.mark.parametrize("keyword", ["\u202eUnited", "Uni\u200bted", "\ufeffDelta", "Delta\u2066"])
def test_keyword_with_bidi_or_zero_width_characters_is_422(client, keyword):
    r = client.post("/keywords", json={"keyword": keyword}, headers=KEY)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("keyword: contains the invisible control or format character U+")
    assert keyword not in [k["keyword"] for k in client.get("/keywords").json()["data"]]


def test_keyword_with_bidi_characters_is_422_in_alert_rules_too(client):
    rule = {"keyword": "\u202eUnited", "metric": "avg_score_below", "threshold": 0}
    r = client.post("/alerts/rules", json=rule, headers=KEY)
    assert r.status_code == 422 and "U+202E" in r.json()["detail"]


# 6. Request bodies over 64 KiB.


def test_body_over_the_limit_is_413_by_content_length(client):
    big = b'{"keyword": "' + b"x" * (MAX_BODY_BYTES + 1) + b'"}'
    r = client.post("/keywords", content=big, headers={**JSON, **KEY})
    assert r.status_code == 413, r.text
    assert "64 KiB" in r.json()["detail"]
    # Just under the limit is parsed and answered on its merits (a too-long keyword).
    ok = b'{"keyword": "' + b"x" * (MAX_BODY_BYTES - 100) + b'"}'
    assert client.post("/keywords", content=ok, headers={**JSON, **KEY}).status_code == 422


def test_chunked_body_over_the_limit_is_413(srv):
    # A raw socket: a client that streams chunks without Content-Length, as far as the server lets it.
    head = (
        "POST /keywords HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {API_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"x" * 16384
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(head + b'd\r\n{"keyword": "\r\n')
        try:
            for _ in range(64):  # 1 MiB if the server read it all
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the server answered and closed: expected
        data = b""
        while b"\r\n\r\n" not in data:
            part = sock.recv(4096)
            if not part:
                break
            data += part
    assert data.startswith(b"HTTP/1.1 413"), data[:200]


# 7. Readable 422s.


def test_threshold_and_length_errors_read_plainly(client):
    rule = {"keyword": "United", "metric": "negative_share_above", "threshold": 2}
    r = client.post("/alerts/rules", json=rule, headers=KEY)
    assert r.json()["detail"] == "threshold for negative_share_above must be in (0, 1)"
    long = "x" * 201
    body_error = client.post("/keywords", json={"keyword": long}, headers=KEY).json()["detail"]
    query_error = client.get("/tweets/latest", params={"keyword": long}).json()["detail"]
    assert body_error == query_error == "keyword: is longer than 200 characters"
    assert client.post("/keywords", json={"keyword": ""}, headers=KEY).json()["detail"] == "keyword: is empty"
    assert client.post("/keywords", json={}, headers=KEY).json()["detail"] == "keyword: Field required"


# 8. A bad setting fails the start-up in one line naming the environment variable.


def test_bad_setting_fails_start_up_naming_the_variable(tmp_path):
    env = {**os.environ, "SENTIMENT_ENGINE": "bogus", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--port", "0"],
        cwd=tmp_path,  # no .env
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SENTIMENT_ENGINE='bogus'" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr
