"""GET /health (database, broker, stage heartbeats) and GET /metrics (Prometheus text)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from api.deps import READ, StateDep
from api.routes.common import call_db
from api.schemas import BrokerHealth, DatabaseHealth, HealthPublic, RateLimitPublic, StagePublic
from api.state import AppState

logger = logging.getLogger(__name__)
router = APIRouter(tags=["ops"])

BROKER_TIMEOUT_SECONDS = 2.0
# The X producer's heartbeat carries details.rate_limited_until (ISO 8601) while X rate-limits it
# (details.rate_limit_reset is the window's reset time, present even when not paused).
RATE_LIMIT_KEYS = ("rate_limited_until",)


async def _broker(settings) -> BrokerHealth:
    servers = settings.kafka_bootstrap_servers
    if not servers:
        return BrokerHealth(configured=False)
    errors = []
    for server in (s.strip() for s in servers.split(",") if s.strip()):
        host, _, port = server.rpartition(":")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host or server, int(port or 9092)), BROKER_TIMEOUT_SECONDS
            )
        except (OSError, ValueError, TimeoutError) as exc:
            errors.append(f"{server}: {type(exc).__name__} {exc}".strip())
            continue
        writer.close()
        return BrokerHealth(configured=True, reachable=True, servers=servers)
    return BrokerHealth(configured=True, reachable=False, servers=servers, error="; ".join(errors)[:500])


def _rate_limits(stages: list[StagePublic]) -> list[RateLimitPublic] | None:
    found = []
    for st in stages:
        details = st.details or {}
        until = next((details[k] for k in RATE_LIMIT_KEYS if details.get(k)), None)
        if until is not None or details.get("rate_limited"):
            found.append(
                RateLimitPublic(instance=st.instance, until=str(until) if until else None, details=details)
            )
    return found or None


async def _database(state: AppState) -> tuple[DatabaseHealth, list[StagePublic]]:
    from db import database, queries

    if state.db is None:
        return DatabaseHealth(reachable=False, error=state.db_error), []
    db = state.db
    try:
        await call_db(database.ping, db)
        beats = await call_db(queries.heartbeats, db)
    except Exception as exc:  # noqa: BLE001 - report, do not raise: this is the health page
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return DatabaseHealth(
            reachable=False,
            mode=db.mode,
            url=db.safe_url(),
            error=(reason[0] if reason else type(exc).__name__)[:300],
        ), []
    now = datetime.now(UTC)
    stages = [
        StagePublic(
            stage=b.stage,
            instance=b.instance,
            engine=b.engine,
            rate=b.rate,
            lag=b.lag,
            last_seen=b.last_seen,
            age_seconds=round(max(0.0, (now - b.last_seen).total_seconds()), 3) if b.last_seen else None,
            details=b.details or {},
        )
        for b in beats
    ]
    return DatabaseHealth(reachable=True, mode=db.mode, url=db.safe_url()), stages


@router.get(
    "/health",
    response_model=HealthPublic,
    dependencies=[READ],
    responses={503: {"model": HealthPublic, "description": "The database is unreachable."}},
    summary="Database, broker and pipeline stage health",
)
async def health(state: StateDep) -> JSONResponse:
    (db_health, stages), broker = await asyncio.gather(_database(state), _broker(state.settings))
    if not db_health.reachable:
        status = "down"
    elif broker.configured and not broker.reachable:
        status = "degraded"
    else:
        status = "ok"
    body = HealthPublic(
        status=status,
        database=db_health,
        broker=broker,
        stages=stages,
        x_rate_limit=_rate_limits(stages),
        ws_clients=state.ws_clients,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=503 if status == "down" else 200)


@router.get(
    "/metrics",
    dependencies=[READ],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
    summary="Prometheus metrics",
)
async def metrics(state: StateDep) -> Response:
    m = state.metrics
    if state.db is not None:
        from db import queries

        def collect() -> None:
            m.observe_db(
                keywords=queries.keywords(state.db),
                heartbeats=queries.heartbeats(state.db),
                max_seq=queries.max_seq(state.db),
            )

        try:
            await call_db(collect)
            m.db_up.set(1)
        except Exception as exc:  # noqa: BLE001 - a scrape must still answer with what it has
            logger.warning("metrics: database gauges not refreshed: %s", exc)
            m.db_up.set(0)
    else:
        m.db_up.set(0)
    return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
