"""A MOCK_DRIFT negative burst from the real mock generator, scored by VADER, stored through
db.writes: one email with the right numbers; and the same tweets ignored when they could be the X
producer's rate-limit fallback (X_FALLBACK_TO_MOCK=true)."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from api.alerts.evaluator import excluded_sources
from db import alerts as store
from pipeline.contracts import AnalyzedTweet
from pipeline.engines.vader import VaderEngine
from pipeline.producers.mock import MockGenerator
from tests.alerts.conftest import T0

M = timedelta(minutes=1)


def _mock_burst(settings, *, seconds_into_run: float, n: int, keyword: str, end):
    gen = MockGenerator(settings, rng=random.Random(7), clock=lambda: seconds_into_run)
    raw = [gen.tweet(keyword) for _ in range(n)]
    scored = VaderEngine().classify([t.text for t in raw])
    out = []
    for i, (t, s) in enumerate(zip(raw, scored, strict=True)):
        created = end - (n - 1 - i) * timedelta(seconds=2) - timedelta(seconds=1)  # inside (end-2n s, end)
        out.append(AnalyzedTweet(**{**t.model_dump(), "created_at": created}, label=s.label, p_neg=s.p_neg,
                                 p_neu=s.p_neu, p_pos=s.p_pos, score=s.score, engine="vader",
                                 processed_at=created))
    return out


@pytest.mark.parametrize("fallback", [False, True])
def test_mock_drift_burst(alert_db, write, rule, evaluator, smtp_server, fallback):
    db = alert_db(**smtp_server.settings(), mock_drift="Tesla:-0.9@60+300", x_fallback_to_mock=fallback)
    assert excluded_sources(db.settings) == (("mock",) if fallback else ())
    calm = _mock_burst(db.settings, seconds_into_run=10, n=60, keyword="Tesla", end=T0 - 5 * M)
    burst = _mock_burst(db.settings, seconds_into_run=120, n=60, keyword="Tesla", end=T0)
    assert {t.source for t in calm + burst} == {"mock"}
    write(db, calm + burst)
    share_calm = sum(t.label == "negative" for t in calm) / len(calm)
    share_burst = sum(t.label == "negative" for t in burst) / len(burst)
    assert share_calm < 0.5 < share_burst  # the drift did move the mix (precondition)
    rule(db, keyword="Tesla", metric="negative_share_above", threshold=0.5, window_minutes=2)

    ev = evaluator(db)
    events = ev.evaluate_once(T0) + ev.evaluate_once(T0 + timedelta(seconds=10))
    if fallback:
        assert events == [] and smtp_server.wait_for(1, timeout=0.5) == []
        return
    assert len(events) == 1
    event = events[0]
    assert event.n == 60 and event.n_neg == sum(t.label == "negative" for t in burst)
    assert event.value == pytest.approx(share_burst)
    mails = smtp_server.wait_for(1, timeout=2)
    assert len(mails) == 1 and f"{share_burst:.1%}" in mails[0].message["Subject"]
    worst = min(burst, key=lambda t: t.score)
    assert " ".join(worst.text.split())[:60] in mails[0].message.get_body(("plain",)).get_content()
    assert store.list_events(db)[0].email_status == "sent"
