"""One active alert evaluator across API replicas and `pipeline run` processes.

A lease row (`evaluator_lease`, works on PostgreSQL and SQLite alike) names the holder and when its
claim expires. The holder renews it on every evaluation and before every email; the others find it
held and stay idle; if the holder dies, the lease expires after `ttl` and another replica takes over.
A clean stop releases it at once.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import timedelta

import sqlalchemy as sa

from db import alerts as store
from db.database import Database

log = logging.getLogger(__name__)

LEASE_NAME = "alert-evaluator"


def default_holder() -> str:
    """host:pid:random, unique per evaluator instance (two in one process do not share a lease)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class EvaluatorLease:
    def __init__(self, db: Database, *, ttl: timedelta, holder: str | None = None,
                 name: str = LEASE_NAME) -> None:
        self.db = db
        self.ttl = ttl
        self.holder = holder or default_holder()
        self.name = name
        self.held = False

    def acquire(self) -> bool:
        """Take or renew the lease; True while this evaluator is the active one."""
        held = store.acquire_lease(self.db, name=self.name, holder=self.holder, ttl=self.ttl)
        if held != self.held:
            if held:
                log.info("alert evaluator %s is now the active one (lease %s, ttl %.0fs)",
                         self.holder, self.name, self.ttl.total_seconds())
            else:
                current = store.lease_holder(self.db, name=self.name)
                log.info("alert evaluator %s is standing by: lease %s held by %s", self.holder, self.name,
                         current[0] if current else "nobody")
        self.held = held
        return held

    def release(self) -> None:
        if not self.held:
            return
        try:
            store.release_lease(self.db, name=self.name, holder=self.holder)
            log.info("alert evaluator %s released lease %s", self.holder, self.name)
        except sa.exc.SQLAlchemyError as exc:
            # It expires by itself after ttl; nothing is lost by failing to hand it back early.
            log.warning("could not release lease %s: %s", self.name, type(exc).__name__)
        self.held = False
