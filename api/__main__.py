"""`python -m api`: serve the API with uvicorn, configured from the settings (API_HOST, API_PORT,
WS_PING_SECONDS). `uvicorn api.main:app` works too (settings are then read in the lifespan)."""

from __future__ import annotations

import argparse

import uvicorn
from pydantic import ValidationError

from pipeline.settings import get_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m api", description="StreamPulse REST + WebSocket API")
    parser.add_argument("--host", help="bind address (default API_HOST)")
    parser.add_argument("--port", type=int, help="port (default API_PORT)")
    args = parser.parse_args(argv)
    from api.main import create_app, settings_problem

    try:
        settings = get_settings()
    except ValidationError as exc:
        raise SystemExit(settings_problem(exc)) from None
    from pipeline.logging_setup import configure_logging

    configure_logging(settings)

    uvicorn.run(
        create_app(settings),
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        ws_ping_interval=settings.ws_ping_seconds,
        ws_ping_timeout=settings.ws_ping_seconds,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        timeout_graceful_shutdown=10,
        log_config=None,  # keep the project's logging configuration
    )


if __name__ == "__main__":
    main()
