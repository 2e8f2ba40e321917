"""The alert and recovery emails: subject, text and HTML bodies, deterministic Message-ID.

Everything is rendered from the stored event (not from live data), so a resend after a crash or a
failed attempt carries the same numbers and the same Message-ID as the first try.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any, Protocol
from urllib.parse import urlencode

from api.alerts.mailer import build_message
from api.alerts.rules import METRIC_DESCRIPTIONS, AlertEventPublic
from pipeline.settings import Settings

MAX_TWEET_CHARS = 280


class TweetLike(Protocol):
    text: str
    score: float
    created_at: datetime


def message_id_for(event_id: int, install_id: str = "") -> str:
    """One event, one Message-ID: a resend of the same event is recognisable as the same alert.
    `install_id` (db.alerts.installation_id) keeps ids unique across databases, whose event ids
    all start at 1."""
    suffix = f".{install_id}" if install_id else ""
    return f"<alert-{event_id}{suffix}@streampulse>"


def event_window(event: AlertEventPublic) -> tuple[datetime, datetime]:
    return event.fired_at - timedelta(minutes=event.window_minutes), event.fired_at


def dashboard_link(settings: Settings, keyword: str) -> str:
    base = settings.dashboard_url
    return f"{base}{'&' if '?' in base else '?'}{urlencode({'keyword': keyword})}"


def _value_text(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric == "negative_share_above":
        return f"{value:.1%}"
    if metric == "volume_spike":
        return f"x{value:.2f}"
    if metric == "score_drop":
        return f"{value:.3f}"
    return f"{value:+.3f}"


def _comparison(event: AlertEventPublic) -> str:
    m, v, t = event.metric, _value_text(event.metric, event.value), _value_text(event.metric, event.threshold)
    if m == "avg_score_below":
        return f"average score {v} (threshold: below {t})"
    if m == "negative_share_above":
        return f"negative share {v} (threshold: above {t})"
    if m == "score_drop":
        base = f"{event.baseline_value:+.3f}" if event.baseline_value is not None else "n/a"
        return f"average score dropped by {v} from the baseline {base} (threshold: {t})"
    base = f"{event.baseline_value:.2f}" if event.baseline_value is not None else "n/a"
    return f"volume {v} the baseline rate of {base} tweets/min (threshold: {t})"


def subject_for(event: AlertEventPublic) -> str:
    window = f"last {event.window_minutes} min"
    if event.kind == "recovery":
        return f"[StreamPulse] {event.keyword}: back to normal ({_comparison(event)}, {window})"
    return f"[StreamPulse] Alert {event.keyword}: {_comparison(event)}, {window}"


def _counts(event: AlertEventPublic) -> str:
    return (
        f"{event.n} tweets: {event.n_neg} negative, {event.n_neu} neutral, {event.n_pos} positive"
    )


def _tweet_line(tweet: TweetLike) -> str:
    text = " ".join(tweet.text.split())
    if len(text) > MAX_TWEET_CHARS:
        text = text[: MAX_TWEET_CHARS - 1] + "…"
    return f"[{tweet.score:+.2f}] {tweet.created_at.isoformat(timespec='seconds')}  {text}"


def render(
    event: AlertEventPublic, tweets: Sequence[TweetLike], settings: Settings
) -> tuple[str, str, str]:
    """(subject, text, html) for an alert or recovery event."""
    since, until = event_window(event)
    link = dashboard_link(settings, event.keyword)
    window = (
        f"{since.isoformat(timespec='seconds')} to {until.isoformat(timespec='seconds')} "
        f"({event.window_minutes} min)"
    )
    headline = (
        f"{event.keyword} is back to normal." if event.kind == "recovery"
        else f"Sentiment alert for {event.keyword}."
    )
    rule = METRIC_DESCRIPTIONS.get(event.metric, event.metric)
    lines = [
        headline,
        "",
        f"Keyword:   {event.keyword}",
        f"Measured:  {_comparison(event)}",
        f"Rule:      {event.metric}: {rule} (rule #{event.rule_id})",
        f"Window:    {window}",
        f"Counts:    {_counts(event)}",
    ]
    if event.kind == "alert":
        lines += ["", "Most negative tweets in the window:"]
        lines += [f"  {i}. {_tweet_line(t)}" for i, t in enumerate(tweets, 1)] or ["  (none)"]
    lines += ["", f"Dashboard: {link}", "", f"StreamPulse event #{event.id}"]
    text = "\n".join(lines) + "\n"

    e = html.escape
    rows = [
        ("Keyword", e(event.keyword)),
        ("Measured", e(_comparison(event))),
        ("Rule", e(f"{event.metric}: {rule} (rule #{event.rule_id})")),
        ("Window", e(window)),
        ("Counts", e(_counts(event))),
    ]
    table = "".join(
        f'<tr><th align="left" style="padding-right:12px">{k}</th><td>{v}</td></tr>' for k, v in rows
    )
    body = [f"<h2>{e(headline)}</h2>", f"<table>{table}</table>"]
    if event.kind == "alert":
        items = "".join(
            f"<li><b>{t.score:+.2f}</b> <small>{e(t.created_at.isoformat(timespec='seconds'))}</small> "
            f"{e(' '.join(t.text.split())[:MAX_TWEET_CHARS])}</li>"
            for t in tweets
        ) or "<li>(none)</li>"
        body.append(f"<h3>Most negative tweets in the window</h3><ol>{items}</ol>")
    body.append(f'<p><a href="{e(link, quote=True)}">Open the StreamPulse dashboard</a></p>')
    body.append(f"<p><small>StreamPulse event #{event.id}</small></p>")
    return subject_for(event), text, "<html><body>" + "".join(body) + "</body></html>"


def build_event_message(
    event: AlertEventPublic, tweets: Sequence[TweetLike], settings: Settings, recipients: Sequence[str]
) -> EmailMessage:
    subject, text, html_body = render(event, tweets, settings)
    headers: dict[str, Any] = {
        "X-StreamPulse-Event": str(event.id),
        "X-StreamPulse-Rule": str(event.rule_id),
        "X-StreamPulse-Kind": event.kind,
    }
    return build_message(
        settings, recipients=recipients, subject=subject, text=text, html=html_body,
        message_id=event.message_id or message_id_for(event.id), headers=headers, date=event.fired_at,
    )
