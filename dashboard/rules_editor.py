"""The alert-threshold editor: list, create, edit, enable/disable and delete rules, a test email,
and the latest alert events. Rules are validated by the same model as the API (api/alerts/rules.py)
before anything is written, so an invalid rule shows its reason and the database stays unchanged."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from api.alerts.rules import (
    METRIC_DESCRIPTIONS,
    METRICS,
    AlertRuleCreate,
    AlertRuleError,
    AlertRuleUpdate,
    RuleNotFound,
    validation_message,
)
from dashboard import state
from dashboard.auth import READ_ONLY_NOTE
from pipeline.settings import Settings

log = logging.getLogger(__name__)

ALL_KEYWORDS = "(every tracked keyword)"
NEW = "new"
DEFAULT_THRESHOLDS = {"avg_score_below": -0.3, "negative_share_above": 0.5, "score_drop": 0.3,
                      "volume_spike": 3.0}


def parse_rule(values: dict[str, Any], settings: Settings) -> tuple[AlertRuleCreate | None, str | None]:
    """The validated rule for the form's values, or None and the message to show."""
    data = dict(values)
    if data.get("keyword") == ALL_KEYWORDS:
        data["keyword"] = None
    try:
        return AlertRuleCreate.model_validate(data, context={"settings": settings}), None
    except ValidationError as exc:
        return None, validation_message(exc)
    except AlertRuleError as exc:
        return None, str(exc)


def rule_label(rule) -> str:
    state_word = "on" if rule.enabled else "off"
    return (f"#{rule.id} · {rule.keyword or 'every keyword'} · {rule.metric} {rule.threshold:g} "
            f"· {rule.window_minutes} min · {state_word}")


def _alerts():
    from db import alerts

    return alerts


def render(db, settings: Settings, tracked: list[str], *, editable: bool) -> None:
    """The rules table, and unless `editable` is False (read-only dashboard) the editor, the
    enable/delete actions and the test email; read-only, none of those is drawn, so none can run."""
    alerts = _alerts()
    apply_pending_pick()
    flash = st.session_state.pop("_sp_rule_flash", None)
    if flash:
        st.success(flash)
    rules = alerts.list_rules(db)
    if rules:
        st.dataframe(pd.DataFrame([_rule_row(r) for r in rules]), hide_index=True, key="rules_table")
    else:
        st.caption("No alert rules yet: create one below." if editable else "No alert rules yet.")
    if not editable:
        st.info(READ_ONLY_NOTE + ".")
        return

    by_id = {str(r.id): r for r in rules}
    options = [NEW, *by_id]
    if st.session_state.get("rule_pick") not in options:
        st.session_state["rule_pick"] = NEW
    pick = st.selectbox("Rule", options, key="rule_pick",
                        format_func=lambda o: "New rule…" if o == NEW else rule_label(by_id[o]))
    current = by_id.get(pick)
    _form(db, settings, tracked, current)
    if current is not None:
        _rule_actions(db, current)
    _test_email(settings, current)


def _rule_row(rule) -> dict[str, Any]:
    return {
        "id": rule.id, "keyword": rule.keyword or "every keyword", "metric": rule.metric,
        "threshold": rule.threshold, "window (min)": rule.window_minutes,
        "baseline (min)": rule.baseline_minutes, "min tweets": rule.min_tweets,
        "cooldown (min)": rule.cooldown_minutes, "recipients": ", ".join(rule.recipients) or "default",
        "enabled": rule.enabled, "recovery email": rule.notify_recovery,
    }


def _form(db, settings: Settings, tracked: list[str], current) -> None:
    rid = str(current.id) if current is not None else NEW
    keywords = [ALL_KEYWORDS, *tracked]
    if current is not None and current.keyword and current.keyword not in keywords:
        keywords.append(current.keyword)
    metric_default = current.metric if current else "avg_score_below"
    with st.form(f"rule_form_{rid}", clear_on_submit=False):
        c1, c2, c3 = st.columns(3)
        keyword = c1.selectbox("Keyword", keywords, key=f"rf_{rid}_keyword",
                               index=keywords.index(current.keyword) if current and current.keyword else 0)
        metric = c2.selectbox("Metric", METRICS, index=METRICS.index(metric_default), key=f"rf_{rid}_metric",
                              help="\n\n".join(f"**{m}**: {d}" for m, d in METRIC_DESCRIPTIONS.items()))
        # No min/max on purpose: the rule model owns the valid ranges and says what is wrong.
        threshold = c3.number_input(
            "Threshold", value=float(current.threshold if current else DEFAULT_THRESHOLDS[metric_default]),
            step=0.05, format="%.3f", key=f"rf_{rid}_threshold",
            help="avg_score_below: [-1, 1] · negative_share_above: (0, 1) · score_drop: (0, 2] · "
                 "volume_spike: > 1",
        )
        c4, c5, c6, c7 = st.columns(4)
        window = c4.number_input("Window (min)", value=int(current.window_minutes if current else 5), step=1,
                                 key=f"rf_{rid}_window")
        baseline = c5.number_input("Baseline (min)", value=int(current.baseline_minutes if current else 60),
                                   step=1, key=f"rf_{rid}_baseline",
                                   help="score_drop and volume_spike: the minutes just before the window.")
        min_tweets = c6.number_input("Min tweets", value=int(current.min_tweets if current else 20), step=1,
                                     key=f"rf_{rid}_min")
        cooldown = c7.number_input("Cooldown (min)", value=int(current.cooldown_minutes if current else 30),
                                   step=1, key=f"rf_{rid}_cooldown")
        allowed = ", ".join(settings.allowed_recipients) or "none configured (ALERT_ALLOWED_RECIPIENTS)"
        recipients = st.text_input(
            "Recipients (comma-separated; empty = ALERT_EMAIL_TO)",
            value=", ".join(current.recipients) if current else "", key=f"rf_{rid}_recipients",
            help=f"Allowed: {allowed}",
        )
        c8, c9 = st.columns(2)
        enabled = c8.checkbox("Enabled", value=bool(current.enabled) if current else True,
                              key=f"rf_{rid}_enabled")
        recovery = c9.checkbox("Email on recovery", value=bool(current.notify_recovery) if current else False,
                               key=f"rf_{rid}_recovery")
        submitted = st.form_submit_button("Create rule" if current is None else f"Save rule #{current.id}",
                                          type="primary")
    if not submitted:
        return
    rule, problem = parse_rule({
        "keyword": keyword, "metric": metric, "threshold": threshold, "window_minutes": window,
        "baseline_minutes": baseline, "min_tweets": min_tweets, "cooldown_minutes": cooldown,
        "recipients": recipients, "enabled": enabled, "notify_recovery": recovery,
    }, settings)
    if rule is None:
        st.error(f"Rule not saved: {problem}")
        return
    alerts = _alerts()
    try:
        if current is None:
            saved = alerts.create_rule(db, rule=rule)
            message = f"Created rule #{saved.id}."
        else:
            saved = alerts.update_rule(db, rule_id=current.id, update=AlertRuleUpdate(**rule.model_dump()))
            message = f"Saved rule #{saved.id}."
    except AlertRuleError as exc:
        st.error(f"Rule not saved: {exc}")
        return
    except RuleNotFound:
        st.error("That rule was deleted meanwhile.")
        return
    log.info("dashboard: %s", message)
    st.session_state["_sp_rule_flash"] = message
    st.session_state["_sp_next_pick"] = str(saved.id)
    st.rerun()


def _rule_actions(db, current) -> None:
    alerts = _alerts()
    c1, c2, c3 = st.columns([1, 1, 2])
    toggle = c1.button("Disable" if current.enabled else "Enable", key=f"toggle_{current.id}")
    confirm = c3.checkbox("Yes, delete it", key=f"confirm_delete_{current.id}")
    delete = c2.button("Delete", key=f"delete_{current.id}", disabled=not confirm)
    try:
        if toggle:
            alerts.update_rule(db, rule_id=current.id, update=AlertRuleUpdate(enabled=not current.enabled))
            st.session_state["_sp_rule_flash"] = (
                f"Rule #{current.id} {'disabled' if current.enabled else 'enabled'}.")
            st.rerun()
        if delete and confirm:
            alerts.delete_rule(db, rule_id=current.id)
            st.session_state["_sp_rule_flash"] = f"Deleted rule #{current.id}."
            st.session_state["_sp_next_pick"] = NEW
            st.rerun()
    except RuleNotFound:
        st.error("That rule was deleted meanwhile.")


def apply_pending_pick() -> None:
    """After a save or delete, select the saved rule (or the new-rule form) on the next run; widget
    state can only be set before its widget is drawn, hence the hand-over through session state."""
    nxt = st.session_state.pop("_sp_next_pick", None)
    if nxt is not None:
        st.session_state["rule_pick"] = nxt


def _test_email(settings: Settings, current) -> None:
    if not st.button("Send test email", key="test_email",
                     help="To the selected rule's recipients, else ALERT_EMAIL_TO, via the SMTP_* settings."):
        return
    from api.alerts.mailer import MailDisabled, MailError, send_test_email

    recipients = list(current.recipients) if current is not None and current.recipients else None
    try:
        with st.spinner("Sending…"):
            sent = send_test_email(settings, recipients)
    except MailDisabled as exc:
        st.warning(f"{exc}")
    except (AlertRuleError, MailError) as exc:
        st.error(f"Test email not sent: {exc}")
    else:
        st.success(f"Test email sent to {', '.join(sent.recipients)} (Message-ID {sent.message_id}).")


def render_events(db, settings: Settings, *, limit: int = 50) -> None:
    events = _alerts().list_events(db, limit=limit)
    if not events:
        st.caption("No alert has fired yet.")
        return
    zone = st.session_state.get("zone", "UTC")
    st.dataframe(pd.DataFrame([
        {
            "fired": state.fmt_time(e.fired_at, zone), "keyword": e.keyword, "kind": e.kind,
            "metric": e.metric, "value": e.value, "threshold": e.threshold, "baseline": e.baseline_value,
            "tweets": e.n, "neg": e.n_neg, "neu": e.n_neu, "pos": e.n_pos, "window (min)": e.window_minutes,
            "email": e.email_status, "error": e.email_error or "", "rule": e.rule_id,
        }
        for e in events
    ]), hide_index=True, key="events_table")
