"""Alert rules CRUD, events and the test email through the live API (real PostgreSQL, real SMTP)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from tests.api.conftest import API_KEY, api_settings
from tests.api.live import live_server

KEY = {"X-API-Key": API_KEY}


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def test_rule_crud_round_trip(client):
    rule = {
        "keyword": "United",
        "metric": "negative_share_above",
        "threshold": 0.6,
        "recipients": ["Ops@Example.com"],
    }
    assert client.post("/alerts/rules", json=rule).status_code == 401
    r = client.post("/alerts/rules", json=rule, headers=KEY)
    assert r.status_code == 201, r.text
    created = r.json()
    rule_id = created["id"]
    assert isinstance(rule_id, int)
    assert created["recipients"] == ["ops@example.com"]
    assert (
        created["window_minutes"],
        created["baseline_minutes"],
        created["min_tweets"],
        created["cooldown_minutes"],
        created["enabled"],
    ) == (5, 60, 20, 30, True)

    assert rule_id in [x["id"] for x in client.get("/alerts/rules").json()["data"]]
    assert client.get(f"/alerts/rules/{rule_id}").json() == created

    assert client.put(f"/alerts/rules/{rule_id}", json={"threshold": 0.7}).status_code == 401
    r = client.put(f"/alerts/rules/{rule_id}", json={"threshold": 0.7, "enabled": False}, headers=KEY)
    assert r.status_code == 200, r.text
    assert r.json()["threshold"] == 0.7 and r.json()["enabled"] is False and r.json()["keyword"] == "United"

    # The merged rule is validated whole: 0.7 is no volume_spike threshold.
    r = client.put(f"/alerts/rules/{rule_id}", json={"metric": "volume_spike"}, headers=KEY)
    assert r.status_code == 422 and "volume_spike" in r.json()["detail"]

    assert client.delete(f"/alerts/rules/{rule_id}").status_code == 401
    assert client.delete(f"/alerts/rules/{rule_id}", headers=KEY).status_code == 204
    assert client.delete(f"/alerts/rules/{rule_id}", headers=KEY).status_code == 404
    assert client.get(f"/alerts/rules/{rule_id}").status_code == 404
    assert client.put(f"/alerts/rules/{rule_id}", json={"threshold": 0.5}, headers=KEY).status_code == 404


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"metric": "negative_share_above", "threshold": 1.5}, "(0, 1)"),
        ({"metric": "avg_score_below", "threshold": -2}, "[-1, 1]"),
        ({"metric": "volume_spike", "threshold": 1}, "greater than 1"),
        ({"metric": "score_drop", "threshold": 0.2, "recipients": ["x@evil.test"]}, "not allowed"),
        ({"metric": "score_drop", "threshold": 0.2, "recipients": ["not-an-address"]}, "email"),
        ({"metric": "score_drop", "threshold": 0.2, "window_minutes": 0}, "window_minutes"),
        ({"metric": "score_drop", "threshold": 0.2, "colour": "red"}, "colour"),
        ({"metric": "nonsense", "threshold": 0.2}, "metric"),
        ({"metric": "score_drop", "threshold": 0.2, "keyword": "a\u0000b"}, "keyword"),
    ],
)
def test_invalid_rules_are_422_with_the_reason(client, body, words):
    r = client.post("/alerts/rules", json=body, headers=KEY)
    assert r.status_code == 422, r.text
    assert words in r.json()["detail"]


def test_rule_id_out_of_range_is_422_not_500(client):
    assert client.get("/alerts/rules/0").status_code == 422
    assert client.get(f"/alerts/rules/{2**70}").status_code == 422
    assert client.get("/alerts/rules/abc").status_code == 422


def test_events_from_a_real_evaluation_of_airline_tweets(client, server, smtp_server):
    from api.alerts.evaluator import AlertEvaluator

    rule = {
        "keyword": "United",
        "metric": "negative_share_above",
        "threshold": 0.2,
        "window_minutes": 60,
        "min_tweets": 5,
        "recipients": ["ops@example.com"],
    }
    rule_id = client.post("/alerts/rules", json=rule, headers=KEY).json()["id"]
    try:
        settings = api_settings(server.state.settings.database_url, **smtp_server.settings())
        events = AlertEvaluator(settings, server.state.db).evaluate_once(
            now=datetime(2015, 2, 24, 12, tzinfo=UTC)
        )
        assert [e.rule_id for e in events] == [rule_id]

        r = client.get("/alerts/events", params={"keyword": "united", "limit": 10})
        assert r.status_code == 200
        body = r.json()
        assert body["count"] == len(body["data"]) >= 1
        event = body["data"][0]
        assert event["rule_id"] == rule_id and event["keyword"] == "United" and event["kind"] == "alert"
        assert event["value"] > 0.2 and event["n"] >= 5 and event["email_status"] == "sent"
        assert client.get("/alerts/events", params={"keyword": "Delta"}).json()["count"] == 0
    finally:
        client.delete(f"/alerts/rules/{rule_id}", headers=KEY)


def test_test_email_without_smtp_is_409(client):
    assert client.post("/alerts/test-email", json={}).status_code == 401
    r = client.post("/alerts/test-email", json={}, headers=KEY)
    assert r.status_code == 409 and "SMTP_HOST" in r.json()["detail"]


def test_test_email_over_real_smtp(airline_db, smtp_server):
    settings = api_settings(airline_db, **smtp_server.settings())
    with live_server(settings) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/alerts/test-email", json={"recipients": ["dev@example.com"]})
        assert r.status_code == 200, r.text
        assert r.json()["sent"] is True and r.json()["recipients"] == ["dev@example.com"]
        [mail] = smtp_server.wait_for(1)
        assert mail.rcpt_tos == ["dev@example.com"] and "Test email" in mail.message["Subject"]

        r = c.post("/alerts/test-email", json={"recipients": ["someone@elsewhere.test"]})
        assert r.status_code == 422 and "not allowed" in r.json()["detail"]
        r = c.post("/alerts/test-email")  # no body: ALERT_EMAIL_TO
        assert r.status_code == 200 and r.json()["recipients"] == ["ops@example.com"]
        smtp_server.stop()
        r = c.post("/alerts/test-email", json={})
        assert r.status_code == 502 and "SMTP" in r.json()["detail"]
