"""`python -m db init`: create or upgrade the schema (idempotent) and print the mode and version."""

from __future__ import annotations

import argparse
import logging
import sys

from db.database import DatabaseUnavailable, open_database
from db.schema import SCHEMA_VERSION
from pipeline.errors import StreamPulseError
from pipeline.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m db", description="StreamPulse storage commands")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create or upgrade the schema (safe to repeat)")
    init.add_argument("--url", help="database URL (default: DATABASE_URL)")
    args = parser.parse_args(argv)

    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        db = open_database(settings, url=args.url, init=True)
    except DatabaseUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return 2
    except StreamPulseError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    try:
        print(f"schema version {SCHEMA_VERSION} ready: mode={db.mode} url={db.safe_url()}")  # noqa: T201
    finally:
        db.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
