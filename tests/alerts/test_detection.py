"""Pure detection and state-machine edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.alerts.detection import Decision, RuleState, WindowStats, decide, transition

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def w(n, n_neg=0, avg=0.0, n_pos=0):
    return WindowStats(n=n, n_neg=n_neg, n_neu=n - n_neg - n_pos, n_pos=n_pos, avg_score=avg)


def d(metric, threshold, window, baseline=None, *, wm=5, bm=60, min_tweets=20) -> Decision:
    return decide(metric, threshold, window=window, baseline=baseline, window_minutes=wm,
                  baseline_minutes=bm, min_tweets=min_tweets)


def test_avg_score_below_is_strict():
    assert d("avg_score_below", -0.5, w(20, avg=-0.51)).holds is True
    assert d("avg_score_below", -0.5, w(20, avg=-0.5)).holds is False
    assert d("avg_score_below", -0.5, w(19, avg=-0.9)).holds is None


def test_negative_share_above():
    r = d("negative_share_above", 0.5, w(40, n_neg=21))
    assert r.holds is True and r.value == pytest.approx(21 / 40)
    assert d("negative_share_above", 0.5, w(40, n_neg=20)).holds is False


def test_score_drop_needs_baseline_volume():
    assert d("score_drop", 0.5, w(20, avg=-0.3), w(19, avg=0.4)).holds is None
    r = d("score_drop", 0.5, w(20, avg=-0.1), w(100, avg=0.4))
    assert r.holds is True and r.value == pytest.approx(0.5) and r.baseline_value == pytest.approx(0.4)
    assert d("score_drop", 0.5, w(20, avg=-0.09), w(100, avg=0.4)).holds is False


def test_volume_spike_compares_rates():
    # 60 tweets in 5 min = 12/min vs 120 in 60 min = 2/min -> x6
    r = d("volume_spike", 6, w(60), w(120))
    assert r.holds is True and r.value == pytest.approx(6.0) and r.baseline_value == pytest.approx(2.0)
    assert d("volume_spike", 6.01, w(60), w(120)).holds is False
    assert d("volume_spike", 2, w(60), w(10)).holds is None  # baseline below min_tweets
    assert d("volume_spike", 2, w(60), None).holds is None


def test_window_stats_from_query_dict():
    s = WindowStats.of({"n": 0, "n_neg": 0, "n_neu": 0, "n_pos": 0, "avg_score": None})
    assert s.n == 0 and s.avg_score is None and s.share_neg is None
    assert WindowStats.of({"n": 4, "n_neg": 1, "n_neu": 2, "n_pos": 1, "avg_score": 0.25}).share_neg == 0.25


def test_fire_once_then_hysteresis():
    s, a = transition(RuleState(), True, now=NOW, cooldown_minutes=30)
    assert a == "alert" and s == RuleState(armed=False, holding=True, last_fired_at=NOW)
    s2, a2 = transition(s, True, now=NOW + timedelta(hours=5), cooldown_minutes=30)
    assert a2 is None and s2 == s  # still holding: never twice, however long
    s3, a3 = transition(s2, False, now=NOW + timedelta(hours=6), cooldown_minutes=30)
    assert a3 == "recovery" and s3.armed and not s3.holding and s3.last_fired_at == NOW


def test_cooldown_counts_from_firing():
    fired = RuleState(armed=True, holding=False, last_fired_at=NOW)
    s, a = transition(fired, True, now=NOW + timedelta(minutes=29), cooldown_minutes=30)
    assert a is None and s.armed and s.holding
    s, a = transition(s, True, now=NOW + timedelta(minutes=30), cooldown_minutes=30)
    assert a == "alert"


def test_unknown_changes_nothing():
    s = RuleState(armed=False, holding=True, last_fired_at=NOW)
    assert transition(s, None, now=NOW, cooldown_minutes=0) == (s, None)


def test_not_holding_while_armed_is_quiet():
    s, a = transition(RuleState(armed=True, holding=True), False, now=NOW, cooldown_minutes=0)
    assert a is None and s == RuleState(armed=True, holding=False)
