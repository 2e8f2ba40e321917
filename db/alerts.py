"""All alert SQL: rule CRUD, per-(rule, keyword) state, events, and the evaluator lease.

Exactly-once firing does not rest on the lease alone: `apply_transition` writes the new state only if
the stored state is still the one the evaluator read (compare-and-set) and inserts the event in the
same transaction, so two evaluators that both judged a rule cannot both record an alert.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from api.alerts.detection import RuleState
from api.alerts.message import message_id_for
from api.alerts.rules import (
    AlertEventPublic,
    AlertRuleCreate,
    AlertRulePublic,
    AlertRuleUpdate,
    RuleNotFound,
    check_recipients,
)
from db import schema
from db.database import SQLITE_IMMEDIATE, Database

log = logging.getLogger(__name__)

R, ST, E, L = schema.alert_rules, schema.alert_state, schema.alert_events, schema.evaluator_lease
MAX_EVENTS_PAGE = 1000


def _now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def _write(db: Database) -> Iterator[sa.Connection]:
    """A write transaction; on SQLite it takes the write lock up front (BEGIN IMMEDIATE), so a
    read-then-write never fails half way with SQLITE_BUSY."""
    with db.engine.connect() as conn:
        if db.is_sqlite:
            conn.info[SQLITE_IMMEDIATE] = True
        with conn.begin():
            yield conn


# --- rules -------------------------------------------------------------------------------------------


def _rule(row: sa.Row) -> AlertRulePublic:
    data = dict(row._mapping)
    data["recipients"] = list(data.get("recipients") or [])
    return AlertRulePublic.model_validate(data)


def create_rule(db: Database, *, rule: AlertRuleCreate) -> AlertRulePublic:
    """Store a new rule; RecipientNotAllowed if a recipient is outside ALERT_ALLOWED_RECIPIENTS."""
    recipients = check_recipients(rule.recipients, db.settings)
    now = _now()
    values = {**rule.model_dump(), "recipients": recipients, "created_at": now, "updated_at": now}
    with _write(db) as conn:
        rule_id = conn.execute(R.insert().values(**values)).inserted_primary_key[0]
        row = conn.execute(sa.select(R).where(R.c.id == rule_id)).one()
    log.info("alert rule %s created: %s %s %s", rule_id, rule.keyword or "*", rule.metric, rule.threshold)
    return _rule(row)


def list_rules(db: Database, *, enabled: bool | None = None) -> list[AlertRulePublic]:
    stmt = sa.select(R).order_by(R.c.id)
    if enabled is not None:
        stmt = stmt.where(R.c.enabled == enabled)
    with db.engine.connect() as conn:
        return [_rule(r) for r in conn.execute(stmt)]


def get_rule(db: Database, *, rule_id: int) -> AlertRulePublic | None:
    with db.engine.connect() as conn:
        row = conn.execute(sa.select(R).where(R.c.id == int(rule_id))).first()
    return _rule(row) if row else None


def update_rule(db: Database, *, rule_id: int, update: AlertRuleUpdate) -> AlertRulePublic:
    """Apply a partial update, validated as a whole rule (AlertRuleError), RuleNotFound if absent.

    Changing what a rule measures (metric or keyword) re-arms it; its last firing still counts for
    the cooldown, so an edit cannot be used to get a burst of emails."""
    with _write(db) as conn:
        row = conn.execute(sa.select(R).where(R.c.id == int(rule_id))).first()
        if row is None:
            raise RuleNotFound(f"alert rule {rule_id} not found")
        current = _rule(row)
        merged = update.merge(current)
        recipients = check_recipients(merged.recipients, db.settings)
        values = {**merged.model_dump(), "recipients": recipients, "updated_at": _now()}
        conn.execute(R.update().where(R.c.id == current.id).values(**values))
        if (merged.metric, merged.keyword) != (current.metric, current.keyword):
            conn.execute(ST.update().where(ST.c.rule_id == current.id).values(armed=True, holding=False))
        row = conn.execute(sa.select(R).where(R.c.id == current.id)).one()
    log.info("alert rule %s updated: %s", rule_id, sorted(update.model_fields_set))
    return _rule(row)


def delete_rule(db: Database, *, rule_id: int) -> bool:
    """Delete a rule and its state; its events stay in the history with rule_id null."""
    with _write(db) as conn:
        conn.execute(E.update().where(E.c.rule_id == int(rule_id)).values(rule_id=None))
        conn.execute(ST.delete().where(ST.c.rule_id == int(rule_id)))
        deleted = conn.execute(R.delete().where(R.c.id == int(rule_id))).rowcount
    if deleted:
        log.info("alert rule %s deleted", rule_id)
    return bool(deleted)


# --- state -------------------------------------------------------------------------------------------


def get_states(db: Database, *, rule_id: int) -> dict[str, RuleState]:
    """The stored state of each keyword of a rule (keyword as stored -> state)."""
    stmt = sa.select(ST.c.keyword, ST.c.armed, ST.c.holding, ST.c.last_fired_at).where(
        ST.c.rule_id == int(rule_id)
    )
    with db.engine.connect() as conn:
        return {
            r.keyword: RuleState(armed=bool(r.armed), holding=bool(r.holding), last_fired_at=r.last_fired_at)
            for r in conn.execute(stmt)
        }


INSTALLATION_KEY = "installation_id"


def installation_id(db: Database) -> str:
    """A random id made once per database (pipeline_state) and kept: it goes into every alert
    Message-ID, so event 1 of a demo database and event 1 of the real one never share an id (Gmail
    drops a message whose Message-ID it has already seen)."""
    from db.writes import _insert, get_state

    found = get_state(db, INSTALLATION_KEY)
    if found:
        return found
    # Insert-if-absent rather than set_state's upsert: two evaluators starting at once agree on
    # whichever id landed first.
    stmt = _insert(db, schema.pipeline_state).values(
        key=INSTALLATION_KEY, value=uuid.uuid4().hex, updated_at=_now()
    ).on_conflict_do_nothing(index_elements=["key"])
    with db.engine.begin() as conn:
        conn.execute(stmt)
    return get_state(db, INSTALLATION_KEY) or ""


def _state_matches(expected: RuleState) -> list[sa.ColumnElement]:
    last = (
        ST.c.last_fired_at.is_(None) if expected.last_fired_at is None
        else ST.c.last_fired_at == expected.last_fired_at
    )
    return [ST.c.armed == expected.armed, ST.c.holding == expected.holding, last]


def apply_transition(
    db: Database,
    *,
    rule_id: int,
    keyword: str,
    expected: RuleState | None,
    new: RuleState,
    event: dict[str, Any] | None = None,
) -> tuple[bool, AlertEventPublic | None]:
    """Move (rule, keyword) from `expected` (None = no row yet) to `new` and record `event`, all in
    one transaction. Returns (applied, event); applied is False when the stored state was no longer
    `expected` (another evaluator got there first) and then nothing is written."""
    values = {"armed": new.armed, "holding": new.holding, "last_fired_at": new.last_fired_at}
    install_id = installation_id(db) if event is not None else ""
    try:
        with _write(db) as conn:
            if expected is None:
                # The primary key makes a concurrent first insert fail instead of doubling up.
                conn.execute(ST.insert().values(rule_id=rule_id, keyword=keyword, **values))
            else:
                changed = conn.execute(
                    ST.update()
                    .where(ST.c.rule_id == rule_id, ST.c.keyword == keyword, *_state_matches(expected))
                    .values(**values)
                ).rowcount
                if changed != 1:
                    return False, None
            if event is None:
                return True, None
            row = {"attempts": 0, **event, "rule_id": rule_id, "keyword": keyword}
            event_id = conn.execute(E.insert().values(**row)).inserted_primary_key[0]
            # Fixed before any send, so every (re)send of this event carries the same Message-ID.
            message_id = message_id_for(event_id, install_id)
            conn.execute(E.update().where(E.c.id == event_id).values(message_id=message_id))
            stored = conn.execute(sa.select(E).where(E.c.id == event_id)).one()
    except sa.exc.IntegrityError:
        return False, None
    return True, _event(stored)


# --- events ------------------------------------------------------------------------------------------


def _event(row: sa.Row) -> AlertEventPublic:
    data = dict(row._mapping)
    data["recipients"] = list(data.get("recipients") or [])
    for key in ("n", "n_neg", "n_neu", "n_pos", "window_minutes", "attempts"):
        data[key] = int(data.get(key) or 0)
    return AlertEventPublic.model_validate(data)


def list_events(
    db: Database,
    *,
    keyword: str | None = None,
    rule_id: int | None = None,
    kind: str | None = None,
    email_status: str | None = None,
    limit: int = 50,
) -> list[AlertEventPublic]:
    """Newest first. `keyword` matches case-insensitively."""
    stmt = sa.select(E).order_by(E.c.fired_at.desc(), E.c.id.desc())
    if keyword is not None and keyword.strip():
        stmt = stmt.where(sa.func.lower(E.c.keyword) == keyword.strip().lower())
    if rule_id is not None:
        stmt = stmt.where(E.c.rule_id == int(rule_id))
    if kind is not None:
        stmt = stmt.where(E.c.kind == kind)
    if email_status is not None:
        stmt = stmt.where(E.c.email_status == email_status)
    stmt = stmt.limit(max(1, min(int(limit), MAX_EVENTS_PAGE)))
    with db.engine.connect() as conn:
        return [_event(r) for r in conn.execute(stmt)]


def get_event(db: Database, *, event_id: int) -> AlertEventPublic | None:
    with db.engine.connect() as conn:
        row = conn.execute(sa.select(E).where(E.c.id == int(event_id))).first()
    return _event(row) if row else None


def events_to_send(db: Database, *, since: datetime, limit: int = 100) -> list[AlertEventPublic]:
    """Events whose email is still owed (pending, or failed and due a retry), oldest first; events
    fired before `since` are left alone as too stale to be worth an email."""
    stmt = (
        sa.select(E)
        .where(E.c.email_status.in_(("pending", "failed")), E.c.fired_at >= since)
        .order_by(E.c.id)
        .limit(limit)
    )
    with db.engine.connect() as conn:
        return [_event(r) for r in conn.execute(stmt)]


def mark_sent(db: Database, *, event_id: int, attempts: int, sent_at: datetime,
              note: str | None = None) -> None:
    with _write(db) as conn:
        conn.execute(
            E.update().where(E.c.id == int(event_id)).values(
                email_status="sent", email_error=note, sent_at=sent_at, attempts=E.c.attempts + attempts
            )
        )


def mark_failed(db: Database, *, event_id: int, attempts: int, error: str) -> None:
    with _write(db) as conn:
        conn.execute(
            E.update().where(E.c.id == int(event_id), E.c.email_status != "sent").values(
                email_status="failed", email_error=error[:2000], attempts=E.c.attempts + attempts
            )
        )


# --- lease -------------------------------------------------------------------------------------------


def acquire_lease(db: Database, *, name: str, holder: str, ttl: timedelta,
                  now: datetime | None = None) -> bool:
    """Take or renew the lease `name` for `holder` until now + ttl; True if `holder` holds it.

    Works the same on PostgreSQL and SQLite: renew if ours or expired, else insert if absent; the
    primary key settles a race between two first inserts."""
    now = now or _now()
    expires = now + ttl
    try:
        with _write(db) as conn:
            taken = conn.execute(
                L.update()
                .where(L.c.name == name, sa.or_(L.c.holder == holder, L.c.expires_at < now))
                .values(holder=holder, expires_at=expires)
            ).rowcount
            if taken:
                return True
            if conn.execute(sa.select(L.c.holder).where(L.c.name == name)).first() is not None:
                return False
            conn.execute(L.insert().values(name=name, holder=holder, expires_at=expires))
            return True
    except sa.exc.IntegrityError:
        return False


def release_lease(db: Database, *, name: str, holder: str) -> None:
    """Give the lease up (on a clean stop) so another replica takes over at once."""
    with _write(db) as conn:
        conn.execute(L.delete().where(L.c.name == name, L.c.holder == holder))


def lease_holder(db: Database, *, name: str) -> tuple[str, datetime] | None:
    with db.engine.connect() as conn:
        row = conn.execute(sa.select(L.c.holder, L.c.expires_at).where(L.c.name == name)).first()
    return (row.holder, row.expires_at) if row else None


def tracked_keywords(db: Database) -> list[str]:
    """The tracked keywords, as stored (a rule with keyword null is evaluated for each)."""
    K = schema.tracked_keywords
    with db.engine.connect() as conn:
        return [r.keyword for r in conn.execute(sa.select(K.c.keyword).order_by(K.c.added_at, K.c.keyword))]
