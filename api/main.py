"""The FastAPI app. `uvicorn api.main:app` works: importing this module reads no settings; they are
read in the lifespan (or passed to `create_app(settings)` by tests and `pipeline run`).

Lifespan: settings -> open the database (when it is down, requests answer 503 with the reason while a
background task retries with backoff) -> the WebSocket notifier and sentiment hub -> the alert
evaluator (when ALERTS_ENABLED and api/alerts/evaluator.py exists). Shutdown stops them in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from anyio import to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import ValidationError

from api import errors, logredact
from api.guards import BodySizeLimit, WriteKeyGuard
from api.metrics import ApiMetrics, LatencyMiddleware
from api.state import AppState
from pipeline.errors import StreamPulseError
from pipeline.settings import Settings, get_settings

logger = logging.getLogger(__name__)

DESCRIPTION = """Real-time tweet sentiment: latest tweets, trends, summaries, keyword counts, alert
rules and events, plus live WebSocket feeds (`/ws/tweets`, `/ws/sentiment`).

Writes need the `X-API-Key` header when `API_KEY` is set (reads too with `API_READ_REQUIRES_KEY`).
Bad parameters answer 422 with a readable `detail`; a database that is down answers 503."""

TAGS = [
    {"name": "tweets", "description": "Stored, scored tweets."},
    {"name": "sentiment", "description": "Aggregates: trend, summary, counts."},
    {"name": "keywords", "description": "Tracked keywords."},
    {"name": "alerts", "description": "Alert rules and fired events."},
    {"name": "ops", "description": "Health and Prometheus metrics."},
    {"name": "live", "description": "WebSocket feeds (not listed in OpenAPI: see the README)."},
]


async def _open_database(state: AppState, database: Any | None) -> bool:
    if database is not None:
        state.db = database
        state.db_error = None
        return True
    from db.database import open_database

    try:
        state.db = await to_thread.run_sync(lambda: open_database(state.settings))
        state.owns_db = True
    except Exception as exc:  # noqa: BLE001 - any failure to connect: serve 503s and retry
        state.db_error = (
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]
        )
        return False
    state.db_error = None
    return True


async def _connect_with_backoff(state: AppState, database: Any | None) -> None:
    settings = state.settings
    delay = settings.retry_initial_backoff_seconds
    while not state.stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.stop.wait(), delay)
        if state.stop.is_set():
            return
        if await _open_database(state, database) and await _start_consumers(state):
            logger.info("database reachable again")
            return
        delay = min(delay * 2, settings.retry_max_backoff_seconds)
        logger.warning("database still unreachable (%s); next try in %.1fs", state.db_error, delay)


async def _start_consumers(state: AppState) -> bool:
    """Notifier, sentiment hub and alert evaluator; False (and the DB marked down) if the DB failed."""
    from api.notifier import SentimentHub, TweetNotifier

    logger.info("API using database %s (mode=%s)", state.db.safe_url(), state.db.mode)
    notifier = TweetNotifier(state.db, state.settings, state.metrics)
    try:
        await notifier.start()
    except Exception as exc:  # noqa: BLE001 - the database went away between open and start
        state.db_error = f"{type(exc).__name__}: {exc}"[:300]
        state.db = None
        return False
    hub = SentimentHub(state.db, state.settings, notifier, state.metrics)
    await hub.start()
    state.notifier, state.sentiment_hub = notifier, hub
    if state.settings.alerts_enabled:
        _start_evaluator(state)
    return True


def _start_evaluator(state: AppState) -> None:
    try:
        from api.alerts.evaluator import AlertEvaluator, run_in_background
    except ImportError as exc:
        logger.warning("ALERTS_ENABLED but the alert evaluator is not available (%s); no alerts run", exc)
        return
    from api.alerts.settings_check import AlertSettingsInvalid

    try:
        state.evaluator = AlertEvaluator(state.settings, state.db)
    except AlertSettingsInvalid as exc:
        # The API keeps serving reads and writes; alerts stay off until the setting is fixed.
        logger.error("alert evaluator NOT started: %s", exc)
        return
    task = asyncio.create_task(run_in_background(state.evaluator, state.stop), name="alert-evaluator")
    state.tasks.append(task)
    logger.info("alert evaluator started (every %.0fs)", state.settings.alert_check_interval_seconds)


async def _shutdown(state: AppState) -> None:
    state.stop.set()
    for task in state.tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 10.0)
    for component in (state.sentiment_hub, state.notifier):
        if component is not None:
            await component.stop()
    if state.db is not None and state.owns_db:
        await to_thread.run_sync(state.db.close)


def create_app(settings: Settings | None = None, *, database: Any | None = None) -> FastAPI:
    """Build the app. Settings default to `get_settings()` read when the app starts, not now."""
    metrics = ApiMetrics()
    logredact.install()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logredact.install()  # again: uvicorn may have configured its loggers after create_app
        state = AppState(settings=settings or _settings_or_one_line_error(app), metrics=metrics)
        app.state.sp = state
        # One attempt before serving, so a reachable database is ready for the first request; if it
        # is down, serve 503s with the reason while a background task retries with backoff.
        if not (await _open_database(state, database) and await _start_consumers(state)):
            logger.warning(
                "database unreachable at start-up (%s); serving 503 until it is back", state.db_error
            )
            state.tasks.append(asyncio.create_task(_connect_with_backoff(state, database), name="db-connect"))
        try:
            yield
        finally:
            await _shutdown(state)

    app = FastAPI(
        title="StreamPulse API",
        version="1.0.0",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    # Innermost first: the key is checked before the size, both before FastAPI reads the body, and
    # CORS wraps them so a browser can read a 401 or 413.
    app.add_middleware(BodySizeLimit)
    app.add_middleware(WriteKeyGuard)
    app.add_middleware(_SettingsCors)
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    app.add_middleware(_OneLineStartupError)
    errors.install(app)

    from api.routes import alert_rules, health, keywords, sentiment, tweets, ws

    for module in (tweets, sentiment, keywords, alert_rules, health, ws):
        app.include_router(module.router)
    return app


class SettingsInvalid(StreamPulseError):
    """The environment (or .env) holds a value Settings refuses; the message names the variable."""


def settings_problem(exc: ValidationError) -> str:
    """'invalid settings: SENTIMENT_ENGINE='bogus': Input should be ...' in one line."""
    parts = []
    for error in exc.errors():
        name = "_".join(str(p) for p in error.get("loc", ())).upper() or "settings"
        value = error.get("input")
        shown = f"={value!r}" if isinstance(value, str | int | float) and name != "settings" else ""
        if any(word in name for word in ("KEY", "PASSWORD", "SECRET", "TOKEN")):
            shown = ""  # never echo a secret
        msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{name}{shown}: {msg}")
    return "invalid settings (environment or .env): " + "; ".join(parts)


def _settings_or_one_line_error(app: FastAPI) -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        problem = settings_problem(exc)
        app.state.startup_error = problem
        raise SettingsInvalid(problem) from None


class _OneLineStartupError:
    """Starlette reports a failed lifespan start-up with the full traceback, which uvicorn logs; for
    a bad setting one line naming the environment variable says more. Other failures keep theirs."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Any) -> None:
            problem = getattr(scope["app"].state, "startup_error", None)
            if message.get("type") == "lifespan.startup.failed" and problem:
                message = {**message, "message": problem}
            await send(message)

        await self.app(scope, receive, send_wrapper)


class _SettingsCors:
    """CORS from CORS_ORIGINS. Settings are read in the lifespan, after the middleware stack is
    built, so the CORSMiddleware is made on the first HTTP request from the app's settings."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._target: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._target is None:
            self._target = self._build(scope["app"].state.sp.settings)
        await self._target(scope, receive, send)

    def _build(self, settings: Settings) -> Any:
        origins = list(settings.cors_origins)
        if not origins:
            return self.app
        # Credentials only with an explicit origin list (Settings refuses '*').
        return CORSMiddleware(
            self.app,
            allow_origins=origins,
            allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
            allow_headers=["Content-Type", "X-API-Key"],
        )


app = create_app()
