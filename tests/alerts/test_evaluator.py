"""The evaluator end to end: real tweets written through db.writes, real SQLite and PostgreSQL, real
aiosmtpd servers. Evaluations are driven by hand at fixed times (T0 + ...), so the numbers are exact."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest

from api.alerts.mailer import Mailer, MailError
from db import alerts as store
from tests.alerts.conftest import T0, tweets

M = timedelta(minutes=1)


def _burst_db(alert_db, write, server, **overrides):
    db = alert_db(**server.settings(), **overrides)
    # Steady, mildly positive chatter on both keywords for the hour before T0.
    for kw in ("Tesla", "Apple"):
        write(db, tweets(kw, start=T0 - 60 * M, count=120, every=30 * timedelta(seconds=1),
                         label="positive", score=0.4))
    return db


def test_negative_burst_one_email_with_the_numbers(alert_db, write, rule, evaluator, smtp_server):
    db = _burst_db(alert_db, write, smtp_server, x_fallback_to_mock=True)
    # Tesla: 30 negative tweets in the last 3 minutes; Apple: only synthetic (mock) negatives.
    burst = tweets("Tesla", start=T0 - 3 * M, count=30, every=timedelta(seconds=6), score=-0.8,
                   text=lambda i: f"Tesla is awful, number {i}")
    burst[4] = burst[4].model_copy(update={"score": -0.99, "text": "worst of all"})
    burst[7] = burst[7].model_copy(update={"score": -0.97, "text": "second worst"})
    burst[9] = burst[9].model_copy(update={"score": -0.95, "text": "third worst"})
    write(db, burst)
    write(db, tweets("Apple", start=T0 - 3 * M, count=200, every=timedelta(seconds=1), score=-1.0,
                     source="mock"))
    r = rule(db, keyword=None, metric="avg_score_below", threshold=-0.2)

    ev = evaluator(db)
    events = ev.evaluate_once(T0)
    for step in range(1, 4):  # the condition keeps holding: no second email
        assert ev.evaluate_once(T0 + step * timedelta(seconds=20)) == []

    assert len(events) == 1
    event = events[0]
    assert (event.keyword, event.kind, event.rule_id, event.email_status) == ("Tesla", "alert", r.id, "sent")
    # Window (T0-5min, T0]: 9 positive (T0-4:30 ... T0-0:30, every 30 s) + 30 negative tweets.
    assert (event.n, event.n_neg, event.n_neu, event.n_pos) == (39, 30, 0, 9)
    expected = (9 * 0.4 + 27 * -0.8 - 0.99 - 0.97 - 0.95) / 39
    assert event.value == pytest.approx(expected)
    assert event.message_id == f"<alert-{event.id}.{store.installation_id(db)}@streampulse>"
    assert event.attempts == 1 and event.recipients == ["ops@example.com"]

    mails = smtp_server.wait_for(1, timeout=2)
    assert len(mails) == 1
    msg = mails[0].message
    assert msg["Message-ID"] == event.message_id
    assert mails[0].rcpt_tos == ["ops@example.com"]
    assert "Tesla" in msg["Subject"] and f"{expected:+.3f}" in msg["Subject"] and "-0.200" in msg["Subject"]
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    for body in (text, html):
        assert "39 tweets: 30 negative, 0 neutral, 9 positive" in body
        assert "http://localhost:8501?keyword=Tesla" in body
        assert "(5 min)" in body
    ranked = [text.index(t) for t in ("worst of all", "second worst", "third worst")]
    assert ranked == sorted(ranked)
    assert "Tesla is awful" not in text  # only the three most negative are listed
    assert store.list_events(db, keyword="apple") == []  # mock tweets never count


def test_min_tweets_gives_no_alert(alert_db, write, rule, evaluator, smtp_server):
    db = alert_db(**smtp_server.settings(), x_fallback_to_mock=True)
    write(db, tweets("Tesla", start=T0 - 4 * M, count=19, score=-0.9))
    write(db, tweets("Tesla", start=T0 - 4 * M, count=50, score=-0.9, source="mock"))
    rule(db, keyword="Tesla", min_tweets=20)
    ev = evaluator(db)
    assert ev.evaluate_once(T0) == []
    write(db, tweets("Tesla", start=T0 - 10 * timedelta(seconds=1), count=1, score=-0.9))
    assert [e.n for e in ev.evaluate_once(T0)] == [20]  # the 20th real tweet tips it
    assert len(smtp_server.wait_for(1, timeout=2)) == 1


def test_cooldown_and_hysteresis(alert_db, write, rule, evaluator, smtp_server):
    db = alert_db(**smtp_server.settings())
    r = rule(db, keyword="Tesla", window_minutes=5, min_tweets=10, cooldown_minutes=30, notify_recovery=False)
    ev = evaluator(db)
    write(db, tweets("Tesla", start=T0 - 2 * M, count=20, score=-0.9))
    assert len(ev.evaluate_once(T0)) == 1
    # Recovers: positive tweets dominate the window at T0+10min -> re-armed, no email (no recovery).
    write(db, tweets("Tesla", start=T0 + 6 * M, count=40, score=0.8, label="positive"))
    assert ev.evaluate_once(T0 + 10 * M) == []
    assert store.get_states(db, rule_id=r.id)["Tesla"].armed
    # Holds again at T0+20min: inside the 30-min cooldown -> no email.
    write(db, tweets("Tesla", start=T0 + 17 * M, count=60, score=-0.9))
    assert ev.evaluate_once(T0 + 20 * M) == []
    assert ev.evaluate_once(T0 + 21 * M) == []
    assert len(smtp_server.wait_for(1, timeout=1)) == 1
    # Still holding once the cooldown is over (T0+30min) -> the second incident is mailed then.
    write(db, tweets("Tesla", start=T0 + 26 * M, count=60, score=-0.9))
    second = ev.evaluate_once(T0 + 30 * M)
    assert len(second) == 1 and second[0].fired_at == T0 + 30 * M
    assert len(smtp_server.wait_for(2, timeout=2)) == 2


def test_recovery_email(alert_db, write, rule, evaluator, smtp_server):
    db = alert_db(**smtp_server.settings())
    rule(db, keyword="Tesla", min_tweets=10, notify_recovery=True)
    ev = evaluator(db)
    write(db, tweets("Tesla", start=T0 - 2 * M, count=20, score=-0.9))
    assert [e.kind for e in ev.evaluate_once(T0)] == ["alert"]
    write(db, tweets("Tesla", start=T0 + 6 * M, count=20, score=0.5, label="positive"))
    recovered = ev.evaluate_once(T0 + 8 * M)
    assert [e.kind for e in recovered] == ["recovery"]
    assert recovered[0].value == pytest.approx(0.5)
    mails = smtp_server.wait_for(2, timeout=2)
    assert "back to normal" in mails[1].message["Subject"]
    install = store.installation_id(db)
    assert mails[1].message["Message-ID"] == f"<alert-{recovered[0].id}.{install}@streampulse>"


def test_quiet_keyword_neither_rearms_nor_recovers(alert_db, write, rule, evaluator, smtp_server):
    db = alert_db(**smtp_server.settings())
    r = rule(db, keyword="Tesla", min_tweets=10, notify_recovery=True, cooldown_minutes=0)
    ev = evaluator(db)
    write(db, tweets("Tesla", start=T0 - 2 * M, count=20, score=-0.9))
    assert len(ev.evaluate_once(T0)) == 1
    assert ev.evaluate_once(T0 + 30 * M) == []  # no tweets at all: cannot judge, nothing changes
    assert not store.get_states(db, rule_id=r.id)["Tesla"].armed


def test_volume_spike_and_score_drop(alert_db, write, rule, evaluator, smtp_server):
    db = alert_db(**smtp_server.settings())
    # Baseline hour before the window: 1 tweet/min, neutral-positive.
    write(db, tweets("Apple", start=T0 - 65 * M + 30 * timedelta(seconds=1), count=60, every=M,
                     label="positive", score=0.3))
    spike = rule(db, keyword="Apple", metric="volume_spike", threshold=3, window_minutes=5,
                 baseline_minutes=60, min_tweets=20)
    drop = rule(db, keyword="Apple", metric="score_drop", threshold=0.5, window_minutes=5,
                baseline_minutes=60, min_tweets=20)
    ev = evaluator(db)
    write(db, tweets("Apple", start=T0 - 5 * M + timedelta(seconds=1), count=10,
                     every=20 * timedelta(seconds=1), label="positive", score=0.3))
    assert ev.evaluate_once(T0) == []  # 2/min vs 1/min: no spike; no drop
    write(db, tweets("Apple", start=T0 - 2 * M, count=40, every=timedelta(seconds=3), score=-0.5))
    fired = {e.rule_id: e for e in ev.evaluate_once(T0)}
    assert set(fired) == {spike.id, drop.id}
    assert fired[spike.id].value == pytest.approx((50 / 5) / (60 / 60))  # x10
    assert fired[spike.id].baseline_value == pytest.approx(1.0)
    assert fired[drop.id].baseline_value == pytest.approx(0.3)
    assert fired[drop.id].value == pytest.approx(0.3 - (10 * 0.3 + 40 * -0.5) / 50)
    subjects = sorted(m.message["Subject"] for m in smtp_server.wait_for(2, timeout=2))
    assert any("x10.00" in s for s in subjects)


def test_baseline_needs_min_tweets(alert_db, write, rule, evaluator, smtp_server):
    db = alert_db(**smtp_server.settings())
    write(db, tweets("Apple", start=T0 - 65 * M, count=5, every=10 * M, score=0.3))  # 5 in the baseline
    rule(db, keyword="Apple", metric="volume_spike", threshold=3, min_tweets=20)
    write(db, tweets("Apple", start=T0 - 2 * M, count=100, every=timedelta(seconds=1), score=0.0,
                     label="neutral"))
    assert evaluator(db).evaluate_once(T0) == []


def test_smtp_down_then_back(alert_db, write, rule, evaluator, smtp_server):
    db = alert_db(**smtp_server.settings())
    rule(db, keyword="Tesla", min_tweets=10)
    write(db, tweets("Tesla", start=T0 - 2 * M, count=20, score=-0.9))
    smtp_server.stop()
    ev = evaluator(db)
    [event] = ev.evaluate_once(T0)
    assert event.email_status == "failed" and event.attempts == 3  # the mailer's retries with backoff
    assert "ConnectionRefusedError" in event.email_error and event.sent_at is None
    assert ev.evaluate_once(T0 + timedelta(seconds=30)) == []
    assert store.get_event(db, event_id=event.id).attempts == 6  # retried on the next evaluation
    smtp_server.start()
    assert ev.evaluate_once(T0 + M) == []  # no new event; the owed email goes out
    stored = store.get_event(db, event_id=event.id)
    assert stored.email_status == "sent" and stored.attempts == 7 and stored.sent_at is not None
    mails = smtp_server.wait_for(1, timeout=2)
    assert [m.message["Message-ID"] for m in mails] == [event.message_id]
    ev.evaluate_once(T0 + 2 * M)
    assert len(smtp_server.wait_for(2, timeout=0.5)) == 1


def test_no_smtp_host_records_disabled(alert_db, write, rule, evaluator):
    db = alert_db()
    rule(db, keyword="Tesla", min_tweets=10)
    write(db, tweets("Tesla", start=T0 - 2 * M, count=20, score=-0.9))
    [event] = evaluator(db).evaluate_once(T0)
    assert event.email_status == "disabled" and event.attempts == 0


def test_two_evaluators_at_once_one_email(alert_db, write, rule, evaluator, smtp_server):
    db = alert_db(**smtp_server.settings())
    other_db = alert_db(**smtp_server.settings())  # a second replica: its own engine and pool
    rule(db, keyword=None, min_tweets=10)
    write(db, tweets("Tesla", start=T0 - 2 * M, count=20, score=-0.9))
    evaluators = [evaluator(db), evaluator(other_db)]
    results: list[list] = [[], []]
    barrier = threading.Barrier(2)

    def loop(i):
        for step in range(5):
            barrier.wait(timeout=10)
            results[i].extend(evaluators[i].evaluate_once(T0 + step * timedelta(seconds=10)))

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sum(len(r) for r in results) == 1
    assert sum(1 for r in results if r) == 1
    assert len(smtp_server.wait_for(2, timeout=1)) == 1
    assert len(store.list_events(db)) == 1


def test_compare_and_set_blocks_a_second_firing_without_the_lease(alert_db, write, rule, evaluator,
                                                                   smtp_server):
    # Even two evaluators that both hold a (misconfigured) lease cannot record the alert twice.
    db = alert_db(**smtp_server.settings())
    rule(db, keyword="Tesla", min_tweets=10)
    write(db, tweets("Tesla", start=T0 - 2 * M, count=20, score=-0.9))
    a, b = evaluator(db), evaluator(db)
    b.lease.acquire = lambda: True  # pretend b thinks it holds the lease too
    a.lease.acquire = lambda: True
    rule_ = store.list_rules(db)[0]
    events_a = a._evaluate_rule(rule_, [], T0)
    events_b = b._evaluate_rule(rule_, [], T0)  # read the state after a wrote it: holds, not armed
    assert len(events_a) == 1 and events_b == []
    from api.alerts.detection import RuleState

    applied, _ = store.apply_transition(db, rule_id=rule_.id, keyword="Tesla", expected=RuleState(),
                                        new=RuleState(armed=False, holding=True, last_fired_at=T0),
                                        event={"kind": "alert", "fired_at": T0, "metric": "avg_score_below"})
    assert not applied  # a stale read (armed) loses
    assert len(store.list_events(db)) == 1


def test_restart_while_holding_sends_no_second_email(alert_db, write, rule, evaluator, smtp_server):
    db = alert_db(**smtp_server.settings())
    rule(db, keyword="Tesla", min_tweets=10, cooldown_minutes=1)
    write(db, tweets("Tesla", start=T0 - 2 * M, count=20, score=-0.9))
    first = evaluator(db)
    assert len(first.evaluate_once(T0)) == 1
    first.lease.release()  # a clean stop
    # A new process (new engine, new holder) while the rule still holds, cooldown long over.
    restarted = evaluator(alert_db(**smtp_server.settings()))
    assert restarted.evaluate_once(T0 + 3 * M) == []
    assert len(smtp_server.wait_for(2, timeout=1)) == 1


def test_crash_failover_after_lease_expiry(alert_db, write, rule, evaluator, smtp_server):
    db = alert_db(**smtp_server.settings())
    rule(db, keyword="Tesla", min_tweets=10)
    write(db, tweets("Tesla", start=T0 - 2 * M, count=20, score=-0.9))
    crashed = evaluator(db, lease_seconds=0.3)
    assert len(crashed.evaluate_once(T0)) == 1  # then "crashes": never releases its lease
    standby = evaluator(alert_db(**smtp_server.settings()), lease_seconds=0.3)
    assert standby.evaluate_once(T0) == [] and not standby.lease.held
    threading.Event().wait(0.5)
    assert standby.evaluate_once(T0 + M) == []
    assert standby.lease.held  # took over; the persisted state says "already fired"
    assert len(smtp_server.wait_for(2, timeout=1)) == 1


class _AcceptThenCrash(Mailer):
    """The SMTP server accepts the message, then the process 'dies' before marking it sent."""

    def send(self, message, recipients):
        super().send(message, recipients)
        raise MailError("simulated crash after acceptance")


def test_resend_after_crash_keeps_the_message_id(alert_db, write, rule, evaluator, smtp_server):
    db = alert_db(**smtp_server.settings())
    rule(db, keyword="Tesla", min_tweets=10)
    write(db, tweets("Tesla", start=T0 - 2 * M, count=20, score=-0.9))
    crashing = evaluator(db, mailer=_AcceptThenCrash(db.settings))
    [event] = crashing.evaluate_once(T0)
    assert event.email_status == "failed"
    crashing.lease.release()
    evaluator(db).evaluate_once(T0 + timedelta(seconds=30))
    mails = smtp_server.wait_for(2, timeout=2)
    assert len(mails) == 2
    assert {m.message["Message-ID"] for m in mails} == {event.message_id}
    assert re.fullmatch(r"<alert-\d+\.[0-9a-f]{32}@streampulse>", event.message_id)
    assert store.get_event(db, event_id=event.id).email_status == "sent"
