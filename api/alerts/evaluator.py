"""The alert evaluator: every ALERT_CHECK_INTERVAL_SECONDS, judge each enabled rule for each of its
keywords, record alert/recovery events, and deliver the emails still owed.

Order of work in one evaluation, and why:
1. take/renew the lease — only one evaluator across replicas does anything;
2. per (rule, keyword): window + baseline stats (non-mock tweets), `detection.decide`, then
   `detection.transition`; a state change and its event are written in one compare-and-set
   transaction, so the state (armed, last fired) survives restarts and nothing fires twice;
3. deliver: every event with email_status pending/failed gets sent; its Message-ID was stored with
   the event, so a resend after a crash between SMTP acceptance and the 'sent' mark is the same
   email. A failed send is marked failed (error, attempts) and retried on later evaluations.

All of it is blocking (SQLAlchemy, smtplib): `run` is for a thread or a process of its own
(`pipeline run`, `python -m api.alerts`); the API uses `run_in_background`, which runs `run` in a
worker thread so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from api.alerts import detection
from api.alerts.detection import RuleState, WindowStats
from api.alerts.lease import EvaluatorLease
from api.alerts.mailer import Mailer, MailError
from api.alerts.message import build_event_message, event_window
from api.alerts.rules import BASELINE_METRICS, AlertEventPublic, AlertRulePublic, effective_recipients
from api.alerts.settings_check import check_alert_settings
from db import alerts as store
from db import queries
from db.database import Database
from pipeline.contracts import utc
from pipeline.errors import StreamPulseError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

#: An email still undelivered this long after its event is given up (left 'failed' in the history).
MAX_EMAIL_AGE = timedelta(hours=24)
_UNTIL_EPSILON = timedelta(microseconds=1)  # queries use [since, until): include a tweet at `now`


def excluded_sources(settings: Settings) -> tuple[str, ...]:
    """Sources that never count towards an alert.

    Mock tweets from the X producer's rate-limit fallback are synthetic and must never alert. They
    carry source="mock" exactly like the mock producer's own tweets, so they are left out whenever
    that fallback is enabled (X_FALLBACK_TO_MOCK=true). Without it the X producer makes no mock
    tweets: mock tweets then come from a mock producer someone runs on purpose (`make run`, a
    MOCK_DRIFT demo), and those count, or the demo could never show an alert."""
    return ("mock",) if settings.x_fallback_to_mock else ()


class AlertEvaluator:
    """`evaluate_once()` for one round, `run(stop)` for the loop. Collaborators are passed in."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        mailer: Mailer | None = None,
        holder: str | None = None,
        lease_seconds: float | None = None,
    ) -> None:
        check_alert_settings(settings)  # a bad ALERT_EMAIL_TO fails here, at start-up
        self.settings = settings
        self.db = db
        self.interval = settings.alert_check_interval_seconds
        self.excluded_sources = excluded_sources(settings)
        self._stop = threading.Event()
        self.mailer = mailer or Mailer(settings, sleep=self._sleep)
        # Long enough to cover an evaluation with slow SMTP; renewed before each email anyway.
        ttl = lease_seconds if lease_seconds is not None else max(30.0, 3 * self.interval)
        self.lease = EvaluatorLease(db, ttl=timedelta(seconds=ttl), holder=holder)

    @property
    def holder(self) -> str:
        return self.lease.holder

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)  # a stop request cuts a retry backoff short

    # --- one round ---------------------------------------------------------------------------

    def evaluate_once(self, now: datetime | None = None) -> list[AlertEventPublic]:
        """One evaluation at `now` (default: the current time). Returns the events it recorded,
        with their email status after delivery; [] when another evaluator holds the lease."""
        if not self.lease.acquire():
            return []
        now = utc(now) if now is not None else datetime.now(UTC)
        created: list[AlertEventPublic] = []
        rules = store.list_rules(self.db, enabled=True)
        tracked = store.tracked_keywords(self.db) if any(r.keyword is None for r in rules) else []
        for rule in rules:
            try:
                created.extend(self._evaluate_rule(rule, tracked, now))
            except (sa.exc.SQLAlchemyError, StreamPulseError, ValueError) as exc:
                log.warning("alert rule %s: evaluation failed: %s", rule.id, _short(exc))
        self.deliver(now)
        return [store.get_event(self.db, event_id=e.id) or e for e in created]

    def _evaluate_rule(self, rule: AlertRulePublic, tracked: list[str],
                       now: datetime) -> list[AlertEventPublic]:
        keywords = [rule.keyword] if rule.keyword else tracked
        states = store.get_states(self.db, rule_id=rule.id)
        by_lower = {k.lower(): k for k in states}
        events = []
        for keyword in keywords:
            stored_key = by_lower.get(keyword.lower(), keyword)
            expected = states.get(stored_key)
            decision, window = self._decide(rule, keyword, now)
            current = expected or RuleState()
            new, action = detection.transition(
                current, decision.holds, now=now, cooldown_minutes=rule.cooldown_minutes
            )
            if action == "recovery" and not rule.notify_recovery:
                action = None
            if new == current and action is None:
                continue  # nothing changed: no write (a missing row means the default state)
            event = self._event_row(rule, keyword, action, decision, window, now) if action else None
            applied, recorded = store.apply_transition(
                self.db, rule_id=rule.id, keyword=stored_key, expected=expected, new=new, event=event
            )
            if not applied:
                log.warning("alert rule %s [%s]: state changed under us (another evaluator?); skipped",
                            rule.id, keyword)
                continue
            if recorded is not None:
                log.info("alert rule %s [%s] %s: %s (%d tweets); event %d, email %s", rule.id, keyword,
                         recorded.kind, decision.reason, window.n, recorded.id, recorded.email_status)
                events.append(recorded)
        return events

    def _decide(self, rule: AlertRulePublic, keyword: str, now: datetime
                ) -> tuple[detection.Decision, WindowStats]:
        until = now + _UNTIL_EPSILON
        since = until - timedelta(minutes=rule.window_minutes)
        window = WindowStats.of(queries.window_stats(
            self.db, keyword=keyword, since=since, until=until, exclude_sources=self.excluded_sources
        ))
        baseline = None
        if rule.metric in BASELINE_METRICS and window.n >= rule.min_tweets:
            baseline = WindowStats.of(queries.window_stats(
                self.db, keyword=keyword, since=since - timedelta(minutes=rule.baseline_minutes),
                until=since, exclude_sources=self.excluded_sources,
            ))
        decision = detection.decide(
            rule.metric, rule.threshold, window=window, baseline=baseline,
            window_minutes=rule.window_minutes, baseline_minutes=rule.baseline_minutes,
            min_tweets=rule.min_tweets,
        )
        return decision, window

    def _event_row(self, rule: AlertRulePublic, keyword: str, kind: str, decision: detection.Decision,
                   window: WindowStats, now: datetime) -> dict:
        recipients = effective_recipients(rule.recipients, self.settings)
        if rule.recipients and len(recipients) < len(rule.recipients):
            log.warning("alert rule %s: recipients outside ALERT_ALLOWED_RECIPIENTS dropped", rule.id)
        if not self.mailer.enabled:
            status, error = "disabled", "SMTP_HOST is not set"
        elif not recipients:
            status, error = "disabled", "no allowed recipients (set ALERT_EMAIL_TO or the rule's recipients)"
        else:
            status, error = "pending", None
        return {
            "kind": kind, "fired_at": now, "metric": rule.metric, "threshold": rule.threshold,
            "value": decision.value, "baseline_value": decision.baseline_value, "n": window.n,
            "n_neg": window.n_neg, "n_neu": window.n_neu, "n_pos": window.n_pos,
            "window_minutes": rule.window_minutes, "email_status": status, "email_error": error,
            "recipients": recipients,
        }

    # --- email -------------------------------------------------------------------------------

    def deliver(self, now: datetime | None = None) -> int:
        """Send every owed email (pending, or failed earlier); returns how many were sent."""
        now = utc(now) if now is not None else datetime.now(UTC)
        if not self.mailer.enabled:
            return 0
        sent = 0
        for event in store.events_to_send(self.db, since=now - MAX_EMAIL_AGE):
            if self._stop.is_set():
                break
            if not self.lease.acquire():  # renewed per email: a slow SMTP must not outlive the lease
                break
            try:
                self._send(event)
                sent += 1
            except MailError as exc:
                store.mark_failed(self.db, event_id=event.id, attempts=exc.attempts, error=str(exc))
                log.warning("alert event %d: email failed after %d attempt(s), will retry on a later "
                            "evaluation: %s", event.id, exc.attempts, exc)
                if not exc.permanent:
                    break  # the server is unreachable: the other emails would only wait for timeouts
        return sent

    def _send(self, event: AlertEventPublic) -> None:
        tweets = []
        if event.kind == "alert":
            since, until = event_window(event)
            tweets = queries.most_negative(
                self.db, keyword=event.keyword, since=since, until=until + _UNTIL_EPSILON, limit=3,
                exclude_sources=self.excluded_sources,
            )
        message = build_event_message(event, tweets, self.settings, event.recipients)
        result = self.mailer.send(message, event.recipients)
        note = None
        if result.refused:
            note = "refused: " + "; ".join(f"{k}: {v}" for k, v in result.refused.items())
        store.mark_sent(self.db, event_id=event.id, attempts=result.attempts,
                        sent_at=datetime.now(UTC), note=note)

    # --- loop --------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Evaluate every interval until `stop` is set; DB outages are logged and retried."""
        self._stop = stop
        log.info("alert evaluator %s started: every %.1fs, email %s", self.holder, self.interval,
                 self.mailer.endpoint if self.mailer.enabled else "disabled (no SMTP_HOST)")
        failures = 0
        try:
            while not stop.is_set():
                started = time.monotonic()
                delay = self.interval
                try:
                    self.evaluate_once()
                    failures = 0
                except (sa.exc.SQLAlchemyError, StreamPulseError) as exc:
                    failures += 1
                    delay = min(self.interval, self.settings.retry_initial_backoff_seconds * 2 ** failures)
                    log.warning("alert evaluation failed (%d in a row), retrying in %.1fs: %s",
                                failures, delay, _short(exc))
                except Exception:
                    log.exception("alert evaluation crashed; continuing")
                stop.wait(max(0.0, delay - (time.monotonic() - started)))
        finally:
            self.lease.release()
            log.info("alert evaluator %s stopped", self.holder)


async def run_in_background(evaluator: AlertEvaluator, stop: asyncio.Event) -> None:
    """Run `evaluator.run` in a worker thread until `stop` is set (or this task is cancelled), for
    the API lifespan: DB and SMTP work never blocks the event loop."""
    thread_stop = threading.Event()

    async def relay() -> None:
        await stop.wait()
        thread_stop.set()

    relay_task = asyncio.create_task(relay())
    worker = asyncio.create_task(asyncio.to_thread(evaluator.run, thread_stop))
    try:
        await asyncio.shield(worker)
    finally:
        thread_stop.set()
        relay_task.cancel()
        # Let the thread finish its current step (bounded by SMTP/DB timeouts) and release the lease.
        await asyncio.wait({worker})


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
