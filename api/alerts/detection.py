"""Pure decisions: does a rule's condition hold for these window/baseline counts, and what does the
rule's state machine do next. No I/O here, so every edge is unit-testable.

A condition is one of three things: it holds, it does not hold, or it cannot be judged (`None`)
because the window (or, for score_drop and volume_spike, the baseline) has fewer than min_tweets.
"Cannot be judged" leaves the state alone: a keyword going quiet after a burst neither re-arms the
rule nor sends a "back to normal" email that nothing supports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from api.alerts.rules import BASELINE_METRICS


@dataclass(frozen=True)
class WindowStats:
    """Counts over a time range (non-mock tweets only) and their count-weighted average score."""

    n: int = 0
    n_neg: int = 0
    n_neu: int = 0
    n_pos: int = 0
    avg_score: float | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any] | None) -> WindowStats:
        if not data:
            return cls()
        n = int(data.get("n") or 0)
        avg = data.get("avg_score")
        return cls(
            n=n,
            n_neg=int(data.get("n_neg") or 0),
            n_neu=int(data.get("n_neu") or 0),
            n_pos=int(data.get("n_pos") or 0),
            avg_score=float(avg) if avg is not None and n else None,
        )

    @property
    def share_neg(self) -> float | None:
        return self.n_neg / self.n if self.n else None


@dataclass(frozen=True)
class Decision:
    holds: bool | None  # None: too few tweets to judge
    value: float | None  # the measured value compared with the threshold
    baseline_value: float | None  # baseline average (score_drop) or tweets/minute (volume_spike)
    reason: str  # one human-readable line, for logs and emails


def decide(
    metric: str,
    threshold: float,
    *,
    window: WindowStats,
    baseline: WindowStats | None = None,
    window_minutes: int,
    baseline_minutes: int,
    min_tweets: int,
) -> Decision:
    """Whether `metric` holds against `threshold` for the window (and baseline) counts."""
    if window.n < min_tweets or (window.avg_score is None and metric != "volume_spike"):
        return Decision(None, None, None, f"{window.n} tweets in the window < min_tweets {min_tweets}")
    if metric == "avg_score_below":
        value = window.avg_score
        return Decision(value < threshold, value, None, f"average score {value:+.3f} vs < {threshold:+.3f}")
    if metric == "negative_share_above":
        value = window.n_neg / window.n
        return Decision(value > threshold, value, None, f"negative share {value:.1%} vs > {threshold:.1%}")
    if metric not in BASELINE_METRICS:
        raise ValueError(f"unknown metric {metric!r}")
    baseline = baseline or WindowStats()
    if baseline.n < min_tweets or (baseline.avg_score is None and metric == "score_drop"):
        return Decision(
            None, None, None, f"{baseline.n} tweets in the baseline < min_tweets {min_tweets}"
        )
    if metric == "score_drop":
        drop = baseline.avg_score - window.avg_score
        return Decision(
            drop >= threshold,
            drop,
            baseline.avg_score,
            f"average {window.avg_score:+.3f} vs baseline {baseline.avg_score:+.3f}: "
            f"drop {drop:.3f} vs >= {threshold:.3f}",
        )
    # volume_spike: compare rates, since window and baseline have different lengths.
    window_rate = window.n / window_minutes
    baseline_rate = baseline.n / baseline_minutes
    ratio = window_rate / baseline_rate
    return Decision(
        ratio >= threshold,
        ratio,
        baseline_rate,
        f"{window_rate:.2f} tweets/min vs baseline {baseline_rate:.2f}/min: "
        f"x{ratio:.2f} vs >= x{threshold:.2f}",
    )


@dataclass(frozen=True)
class RuleState:
    """Per (rule, keyword): armed = may fire; holding = the condition held at the last evaluation."""

    armed: bool = True
    holding: bool = False
    last_fired_at: datetime | None = None


Action = Literal["alert", "recovery"] | None


def in_cooldown(state: RuleState, now: datetime, cooldown_minutes: int) -> bool:
    if state.last_fired_at is None:
        return False
    return now - state.last_fired_at < timedelta(minutes=cooldown_minutes)


def transition(
    state: RuleState, holds: bool | None, *, now: datetime, cooldown_minutes: int
) -> tuple[RuleState, Action]:
    """The next state and what to emit.

    - fires when the condition holds, the rule is armed and the cooldown (from the last firing)
      has passed; firing disarms it;
    - re-arms only when the condition stops holding (hysteresis); "recovery" is returned then for
      a rule that had fired (the caller sends it only when notify_recovery is set);
    - a condition that starts holding again inside the cooldown stays armed and fires once the
      cooldown is over if it still holds, so a second incident is delayed, never lost.
    """
    if holds is None:
        return state, None
    if holds:
        if state.armed and not in_cooldown(state, now, cooldown_minutes):
            return RuleState(armed=False, holding=True, last_fired_at=now), "alert"
        return replace(state, holding=True), None
    if not state.armed:
        return replace(state, armed=True, holding=False), "recovery"
    return replace(state, holding=False), None
