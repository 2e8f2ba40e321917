"""Every REST endpoint against a live uvicorn server over real PostgreSQL holding the airline tweets."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.api.conftest import API_KEY
from tests.api.live import AIRLINES


@pytest.fixture(scope="module")
def stored(airline_tweets):
    """The rows as stored: first copy per (id, keyword, created_at)."""
    seen, out = set(), []
    for t in airline_tweets:
        key = (t.id, t.keyword, t.created_at)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def _counts(rows) -> dict:
    c = Counter(t.label for t in rows)
    return {"n": len(rows), "n_neg": c["negative"], "n_neu": c["neutral"], "n_pos": c["positive"]}


def test_latest_tweets_default_page_is_newest_first(client, stored):
    r = client.get("/tweets/latest")
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == 50 == len(body["data"])
    newest = max(t.created_at for t in stored)
    assert datetime.fromisoformat(body["data"][0]["created_at"]) == newest
    stamps = [datetime.fromisoformat(t["created_at"]) for t in body["data"]]
    assert stamps == sorted(stamps, reverse=True)
    assert body["next_cursor"]
    first = body["data"][0]
    assert set(first) >= {"seq", "id", "keyword", "text", "label", "score", "engine", "gold_label"}
    assert isinstance(first["id"], str) and first["engine"] == "vader" and first["source"] == "replay"


def test_latest_tweets_filters(client, stored):
    r = client.get("/tweets/latest", params={"keyword": "united", "label": "negative", "limit": 500})
    data = r.json()["data"]
    assert r.status_code == 200 and len(data) == 500
    assert {t["keyword"] for t in data} == {"United"} and {t["label"] for t in data} == {"negative"}

    r = client.get("/tweets/latest", params={"q": "LUGGAGE", "limit": 500})
    expected = [t for t in stored if "luggage" in t.text.lower()]
    assert r.status_code == 200
    assert len(r.json()["data"]) == min(500, len(expected)) > 0
    assert all("luggage" in t["text"].lower() for t in r.json()["data"])

    r = client.get(
        "/tweets/latest", params=[("keyword", "Delta"), ("keyword", "Southwest"), ("limit", "200")]
    )
    assert {t["keyword"] for t in r.json()["data"]} <= {"Delta", "Southwest"}


def test_cursor_pages_through_a_keyword_exactly(client, stored):
    expected = {t.id for t in stored if t.keyword == "Virgin America"}
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"keyword": "Virgin America", "limit": 150}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/tweets/latest", params=params).json()
        seen.extend(t["id"] for t in body["data"])
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            break
        assert pages < 50
    assert len(seen) == len(set(seen)) == len(expected)
    assert set(seen) == expected


def test_sentiment_trend_sums_match_stored_rows(client, stored):
    since, until = "2015-02-16T00:00:00Z", "2015-02-25T00:00:00Z"
    lo, hi = datetime(2015, 2, 16, tzinfo=UTC), datetime(2015, 2, 25, tzinfo=UTC)
    r = client.get(
        "/sentiment-trend",
        params=[
            ("keyword", "United"),
            ("keyword", "Delta"),
            ("since", since),
            ("until", until),
            ("bucket", "1h"),
        ],
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["bucket_seconds"] == 3600
    assert set(body["series"]) == {"United", "Delta"}
    for name in ("United", "Delta"):
        points = body["series"][name]
        assert len(points) == 9 * 24  # empty buckets included
        rows = [t for t in stored if t.keyword == name and lo <= t.created_at < hi]
        got = {k: sum(p[k] for p in points) for k in ("n", "n_neg", "n_neu", "n_pos")}
        assert got == _counts(rows)
        weighted = sum(p["avg_score"] * p["n"] for p in points if p["n"])
        assert weighted == pytest.approx(sum(t.score for t in rows), abs=1e-6)


def test_sentiment_trend_coarsens_long_ranges_and_defaults_to_tracked(client):
    r = client.get("/sentiment-trend", params={"since": "2015-01-01", "until": "2015-12-31", "bucket": "1m"})
    assert r.status_code == 200
    body = r.json()
    assert set(body["series"]) == set(AIRLINES)
    assert all(len(points) <= 2000 for points in body["series"].values())
    assert body["bucket_seconds"] > 60


def test_summary_window_against_previous(client, stored):
    until = datetime(2015, 2, 24, 12, tzinfo=UTC)
    r = client.get("/summary", params={"keyword": "United", "window": "24h", "until": until.isoformat()})
    assert r.status_code == 200, r.text
    body = r.json()
    window = [
        t for t in stored if t.keyword == "United" and until - timedelta(hours=24) <= t.created_at < until
    ]
    prev = [
        t
        for t in stored
        if t.keyword == "United" and until - timedelta(hours=48) <= t.created_at < until - timedelta(hours=24)
    ]
    assert {k: body[k] for k in ("n", "n_neg", "n_neu", "n_pos")} == _counts(window)
    assert body["prev_n"] == len(prev) and body["change_n"] == len(window) - len(prev)
    assert body["avg_score"] == pytest.approx(sum(t.score for t in window) / len(window), abs=1e-9)
    assert body["share_neg"] == pytest.approx(_counts(window)["n_neg"] / len(window))
    assert body["tweets_per_minute"] == pytest.approx(len(window) / (24 * 60))

    now = client.get("/summary", params={"window": "15m"})  # nothing stored near now
    assert now.status_code == 200 and now.json()["n"] == 0


@pytest.mark.parametrize("path", ["/sentiment/counts", "/sentiment-counts"])
def test_keyword_counts_tracked_and_text_search(client, stored, path):
    r = client.get(path, params={"keyword": "united"})
    assert r.status_code == 200
    assert r.json()["tracked"] is True
    assert {k: r.json()[k] for k in ("n", "n_neg", "n_neu", "n_pos")} == _counts(
        [t for t in stored if t.keyword == "United"]
    )

    r = client.get(path, params={"keyword": "cancelled", "since": "2015-02-20", "until": "2015-02-23"})
    lo, hi = datetime(2015, 2, 20, tzinfo=UTC), datetime(2015, 2, 23, tzinfo=UTC)
    by_id = {t.id: t for t in stored if "cancelled" in t.text.lower() and lo <= t.created_at < hi}
    assert r.status_code == 200 and r.json()["tracked"] is False
    assert r.json()["n"] == len(by_id) > 0


def test_keywords_list_and_add_with_api_key(client, stored):
    r = client.get("/keywords")
    assert r.status_code == 200
    by_name = {k["keyword"]: k for k in r.json()["data"]}
    for name in AIRLINES:
        assert by_name[name]["tracked"] is True
        assert by_name[name]["n"] == sum(1 for t in stored if t.keyword == name)

    assert client.post("/keywords", json={"keyword": "JetBlue"}).status_code == 401
    assert (
        client.post("/keywords", json={"keyword": "JetBlue"}, headers={"X-API-Key": "wrong"}).status_code
        == 401
    )
    r = client.post("/keywords", json={"keyword": "JetBlue"}, headers={"X-API-Key": API_KEY})
    assert r.status_code == 201 and r.json()["keyword"] == "JetBlue" and r.json()["tracked"] is True
    again = client.post("/keywords", json={"keyword": "jetblue"}, headers={"X-API-Key": API_KEY})
    assert again.status_code == 201 and again.json()["keyword"] == "JetBlue"  # idempotent, case-insensitive
    names = [k["keyword"] for k in client.get("/keywords").json()["data"]]
    assert names.count("JetBlue") == 1
    latin = client.post(
        "/keywords", json={"keyword": "JetBlue"}, headers={"X-API-Key": "cl\xe9".encode("latin-1")}
    )
    assert latin.status_code == 401  # a non-ASCII key is just a wrong key, not a 500
    bad = client.post("/keywords", json={"keyword": "   "}, headers={"X-API-Key": API_KEY})
    assert bad.status_code == 422


def test_health_reports_db_broker_and_stage_heartbeats(client, server):
    from db.writes import beat

    beat(server.state.db, stage="processor", instance="processor-test", engine="vader", rate=12.5, lag=3)
    beat(
        server.state.db,
        stage="producer-x",
        instance="producer-x-test",
        rate=0.0,
        details={"rate_limited_until": "2030-01-01T00:00:00+00:00", "state": "rate_limited"},
    )
    beat(
        server.state.db,
        stage="producer-x",
        instance="producer-x-ok",
        rate=1.0,
        details={"rate_limited_until": None, "rate_limit_reset": "2030-01-01T00:00:00+00:00", "state": "ok"},
    )
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["database"]["reachable"] is True and body["database"]["mode"] in ("postgresql", "timescaledb")
    assert body["broker"]["configured"] is False  # embedded bus in this test
    stage = next(s for s in body["stages"] if s["instance"] == "processor-test")
    assert stage["engine"] == "vader" and stage["rate"] == 12.5 and stage["lag"] == 3
    assert 0 <= stage["age_seconds"] < 60
    assert body["x_rate_limit"] == [
        {
            "instance": "producer-x-test",
            "until": "2030-01-01T00:00:00+00:00",
            "details": {"rate_limited_until": "2030-01-01T00:00:00+00:00", "state": "rate_limited"},
        }
    ]


def test_metrics_prometheus_text(client, stored):
    client.get("/summary", params={"window": "1h"})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert f"streampulse_tweets_stored_total {float(len(stored))}" in text
    assert 'streampulse_tweets_stored{keyword="United"}' in text
    assert (
        'streampulse_http_request_duration_seconds_count{method="GET",route="/summary",status="200"}' in text
    )
    assert "streampulse_ws_clients" in text
    assert "streampulse_stage_last_heartbeat_timestamp_seconds" in text
    assert "streampulse_database_up 1.0" in text


BAD = [
    ("/tweets/latest", {"limit": "-1"}, "limit"),
    ("/tweets/latest", {"limit": "0"}, "limit"),
    ("/tweets/latest", {"limit": "501"}, "limit"),
    ("/tweets/latest", {"limit": "abc"}, "limit"),
    ("/tweets/latest", {"label": "angry"}, "label"),
    ("/tweets/latest", {"cursor": "not-a-cursor"}, "cursor"),
    ("/tweets/latest", {"cursor": "eyJ4IjoxfQ"}, "cursor"),  # valid base64 JSON, wrong shape
    ("/tweets/latest", {"keyword": "a\x00b"}, "keyword"),
    ("/sentiment-trend", {"bucket": "7x"}, "bucket"),
    ("/sentiment-trend", {"since": "not-a-date"}, "since"),
    ("/sentiment-trend", {"since": "2015-02-24", "until": "2015-02-20"}, "until"),
    ("/sentiment-trend", {"since": "2015-02-24", "until": "2015-02-24"}, "until"),
    ("/sentiment-trend", {"until": "0001-01-01T00:00:00+05:00"}, "until"),
    ("/sentiment-trend", {"since": "99999-01-01"}, "since"),
    ("/summary", {"window": "forever"}, "window"),
    ("/summary", {"window": "0m"}, "window"),
    ("/summary", {"window": "9999d"}, "window"),
    ("/summary", {"until": "yesterday"}, "until"),
    ("/sentiment/counts", {}, "keyword"),
    ("/sentiment/counts", {"keyword": "United", "since": "2015-02-24", "until": "2015-01-01"}, "until"),
    ("/sentiment-counts", {"keyword": " "}, "keyword"),
    ("/alerts/events", {"limit": "-5"}, "limit"),
]


@pytest.mark.parametrize(("path", "params", "param"), BAD, ids=[f"{p}?{q}" for p, q, _ in BAD])
def test_bad_parameters_are_422_with_a_readable_reason(client, path, params, param):
    r = client.get(path, params=params)
    assert r.status_code == 422, r.text
    body = r.json()
    assert isinstance(body["detail"], str) and param in body["detail"]
    assert body["errors"] and param in body["errors"][0]["loc"]


def test_unknown_route_and_method_are_not_500(client):
    assert client.get("/nope").status_code == 404
    assert client.delete("/keywords").status_code == 405


def test_cors_only_for_configured_origins(client):
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}
    ok = client.options("/keywords", headers={"Origin": "http://dash.example", **pre})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "http://dash.example"
    assert ok.headers["access-control-allow-credentials"] == "true"
    other = client.get("/keywords", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_openapi_documents_examples_and_errors(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/tweets/latest",
        "/sentiment-trend",
        "/summary",
        "/sentiment/counts",
        "/sentiment-counts",
        "/keywords",
        "/health",
        "/metrics",
        "/alerts/rules",
        "/alerts/rules/{rule_id}",
        "/alerts/events",
        "/alerts/test-email",
    ):
        assert path in paths
    assert "422" in paths["/tweets/latest"]["get"]["responses"]
    assert "503" in paths["/summary"]["get"]["responses"]
    assert spec["components"]["schemas"]["TweetPublic"].get("examples")
    assert "X-API-Key" in str(spec["components"]["securitySchemes"])


def test_postman_collection_requests_answer_against_the_live_server(client):
    """Each GET of the committed collection, as Postman would send it, gets a 2xx with real data."""
    import json as _json

    from api.postman import OUTPUT

    collection = _json.loads(OUTPUT.read_text(encoding="utf-8"))
    sent = 0
    for folder in collection["item"]:
        for item in folder["item"]:
            req = item["request"]
            if req["method"] != "GET" or "variable" in req["url"]:
                continue
            path = "/" + "/".join(req["url"]["path"])
            params = [(q["key"], q["value"]) for q in req["url"].get("query", []) if not q["disabled"]]
            r = client.get(path, params=params)
            assert 200 <= r.status_code < 300, (path, r.status_code, r.text[:200])
            sent += 1
    assert sent >= 10


EMPTY_KEYWORD = "keyword: is empty (leave the parameter out for every keyword)"


EMPTY_CASES = [
    (path, value)
    for path in ("/tweets/latest", "/summary", "/sentiment-trend", "/alerts/events")
    # /alerts/events takes one keyword, not a comma-separated list: "," is a term there.
    for value in ("", "   ", ",")
    if not (value == "," and path == "/alerts/events")
]


@pytest.mark.parametrize(("path", "value"), EMPTY_CASES)
def test_explicitly_empty_keyword_is_422_but_omitting_it_means_all(client, path, value):
    r = client.get(path, params={"keyword": value})
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == EMPTY_KEYWORD
    assert client.get(path).status_code == 200
