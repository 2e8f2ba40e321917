"""db/alerts.py on SQLite and PostgreSQL: rule CRUD with the allow-list, events, the lease."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest

from api.alerts.detection import RuleState
from api.alerts.rules import (
    AlertRuleCreate,
    AlertRuleError,
    AlertRuleUpdate,
    RecipientNotAllowed,
    RuleNotFound,
)
from db import alerts as store
from tests.alerts.conftest import T0


def test_rule_crud(alert_db):
    db = alert_db(alert_allowed_recipients="@example.com")
    created = store.create_rule(db, rule=AlertRuleCreate(
        keyword="Tesla", metric="negative_share_above", threshold=0.6, recipients=["A@example.com"]))
    assert created.id > 0 and created.recipients == ["a@example.com"] and not created.notify_recovery
    assert created.created_at.tzinfo is not None
    other = store.create_rule(db, rule=AlertRuleCreate(metric="volume_spike", threshold=4))
    assert [r.id for r in store.list_rules(db)] == [created.id, other.id]
    assert store.get_rule(db, rule_id=created.id) == created
    updated = store.update_rule(db, rule_id=created.id, update=AlertRuleUpdate(threshold=0.7, enabled=False))
    assert (updated.threshold, updated.enabled, updated.keyword) == (0.7, False, "Tesla")
    assert updated.updated_at >= created.updated_at
    assert [r.id for r in store.list_rules(db, enabled=True)] == [other.id]
    with pytest.raises(AlertRuleError):
        store.update_rule(db, rule_id=created.id, update=AlertRuleUpdate(threshold=1.5))
    with pytest.raises(RuleNotFound):
        store.update_rule(db, rule_id=999999, update=AlertRuleUpdate(enabled=True))
    assert store.delete_rule(db, rule_id=created.id) is True
    assert store.delete_rule(db, rule_id=created.id) is False
    assert store.get_rule(db, rule_id=created.id) is None


def test_store_enforces_allow_list(alert_db):
    db = alert_db()  # allow-list defaults to ALERT_EMAIL_TO = ops@example.com
    with pytest.raises(RecipientNotAllowed):
        store.create_rule(db, rule=AlertRuleCreate(metric="avg_score_below", threshold=0,
                                                   recipients=["relay@spam.example"]))
    r = store.create_rule(db, rule=AlertRuleCreate(metric="avg_score_below", threshold=0,
                                                   recipients=["ops@example.com"]))
    with pytest.raises(RecipientNotAllowed):
        store.update_rule(db, rule_id=r.id, update=AlertRuleUpdate(recipients=["x@elsewhere.org"]))
    assert store.get_rule(db, rule_id=r.id).recipients == ["ops@example.com"]
    assert len(store.list_rules(db)) == 1


def _fire(db, rule_id, keyword="Tesla", at=T0):
    return store.apply_transition(
        db, rule_id=rule_id, keyword=keyword, expected=None,
        new=RuleState(armed=False, holding=True, last_fired_at=at),
        event={"kind": "alert", "fired_at": at, "metric": "avg_score_below", "threshold": -0.5,
               "value": -0.7, "n": 30, "n_neg": 25, "n_neu": 3, "n_pos": 2, "window_minutes": 5,
               "email_status": "pending", "recipients": ["ops@example.com"]},
    )


def test_events_state_and_history(alert_db):
    db = alert_db()
    r = store.create_rule(db, rule=AlertRuleCreate(metric="avg_score_below", threshold=-0.5))
    applied, event = _fire(db, r.id)
    assert applied and event.message_id == f"<alert-{event.id}.{store.installation_id(db)}@streampulse>"
    assert _fire(db, r.id) == (False, None)  # the state row exists now: a second "first" insert loses
    _fire(db, r.id, keyword="Apple", at=T0 + timedelta(minutes=1))
    assert [e.keyword for e in store.list_events(db)] == ["Apple", "Tesla"]  # newest first
    assert [e.keyword for e in store.list_events(db, keyword="TESLA")] == ["Tesla"]
    assert len(store.list_events(db, limit=1)) == 1
    assert store.get_states(db, rule_id=r.id)["Tesla"].last_fired_at == T0
    assert [e.id for e in store.events_to_send(db, since=T0)] == [event.id, event.id + 1]
    store.mark_failed(db, event_id=event.id, attempts=3, error="boom")
    store.mark_sent(db, event_id=event.id, attempts=1, sent_at=T0)
    store.mark_failed(db, event_id=event.id, attempts=1, error="late")  # never un-sends
    got = store.get_event(db, event_id=event.id)
    assert (got.email_status, got.attempts, got.sent_at) == ("sent", 4, T0)
    # Deleting the rule keeps its history.
    store.delete_rule(db, rule_id=r.id)
    assert {e.rule_id for e in store.list_events(db)} == {None}
    assert store.get_states(db, rule_id=r.id) == {}


def test_update_metric_rearms_keeps_cooldown(alert_db):
    db = alert_db()
    r = store.create_rule(db, rule=AlertRuleCreate(metric="avg_score_below", threshold=-0.5))
    _fire(db, r.id)
    store.update_rule(db, rule_id=r.id, update=AlertRuleUpdate(threshold=-0.6))
    assert not store.get_states(db, rule_id=r.id)["Tesla"].armed  # same measure: hysteresis goes on
    store.update_rule(db, rule_id=r.id, update=AlertRuleUpdate(metric="negative_share_above", threshold=0.5))
    state = store.get_states(db, rule_id=r.id)["Tesla"]
    assert state.armed and not state.holding and state.last_fired_at == T0


def test_lease(alert_db):
    db = alert_db()
    ttl = timedelta(seconds=30)
    assert store.acquire_lease(db, name="x", holder="a", ttl=ttl, now=T0)
    assert not store.acquire_lease(db, name="x", holder="b", ttl=ttl, now=T0 + timedelta(seconds=10))
    assert store.acquire_lease(db, name="x", holder="a", ttl=ttl, now=T0 + timedelta(seconds=20))  # renew
    assert not store.acquire_lease(db, name="x", holder="b", ttl=ttl, now=T0 + timedelta(seconds=40))
    assert store.acquire_lease(db, name="x", holder="b", ttl=ttl, now=T0 + timedelta(seconds=51))  # expired
    assert store.lease_holder(db, name="x")[0] == "b"
    store.release_lease(db, name="x", holder="a")  # not a's any more: no effect
    assert store.lease_holder(db, name="x")[0] == "b"
    store.release_lease(db, name="x", holder="b")
    assert store.lease_holder(db, name="x") is None


def test_lease_race_one_winner(alert_db):
    dbs = [alert_db() for _ in range(4)]
    wins: list[str] = []
    barrier = threading.Barrier(len(dbs))

    def grab(i):
        barrier.wait(timeout=10)
        if store.acquire_lease(dbs[i], name="race", holder=f"h{i}", ttl=timedelta(seconds=30)):
            wins.append(f"h{i}")

    threads = [threading.Thread(target=grab, args=(i,)) for i in range(len(dbs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(wins) == 1 and store.lease_holder(dbs[0], name="race")[0] == wins[0]


def test_message_ids_differ_across_databases_and_stay_stable(alert_db, make_settings, tmp_path):
    """Event 1 of a demo database and event 1 of the real one must not share a Message-ID (Gmail
    drops a message whose id it has seen); within one database the installation id never changes."""
    from db.database import open_database

    db = alert_db()
    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    other = open_database(make_settings(database_url=other_url, keywords=["Tesla"]))
    try:
        ids = []
        for d in (db, other):
            r = store.create_rule(d, rule=AlertRuleCreate(metric="avg_score_below", threshold=-0.5))
            applied, event = _fire(d, r.id)
            assert applied
            assert re.fullmatch(rf"<alert-{event.id}\.[0-9a-f]{{32}}@streampulse>", event.message_id)
            assert store.get_event(d, event_id=event.id).message_id == event.message_id
            ids.append(event.message_id)
        assert ids[0] != ids[1]
        assert store.installation_id(db) == store.installation_id(db)
        assert store.installation_id(db) != store.installation_id(other)
    finally:
        other.close()
