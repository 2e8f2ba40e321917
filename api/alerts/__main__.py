"""`python -m api.alerts`: the alert evaluator as a process of its own.

    python -m api.alerts                 # loop every ALERT_CHECK_INTERVAL_SECONDS until SIGTERM/SIGINT
    python -m api.alerts --once          # one evaluation; prints the events it recorded as JSON lines
                                         # (exit 3, one line naming the holder, when another
                                         # evaluator holds the lease and nothing was evaluated)
    python -m api.alerts test-email [--to a@b.c ...]   # send a test email with the SMTP_* settings

Several copies (or API replicas) may run: the evaluator lease keeps exactly one of them active.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import datetime

from pipeline.errors import StreamPulseError
from pipeline.logging_setup import configure_logging
from pipeline.settings import get_settings


def _out(text: str) -> None:
    print(text)  # noqa: T201 - CLI output


EXIT_STANDBY = 3  # --once: another evaluator is active, so this one evaluated nothing


def _standby_line(evaluator, db) -> str:
    from db import alerts as store

    current = store.lease_holder(db, name=evaluator.lease.name)
    if current is None:  # released between our try and this read
        return "another alert evaluator held the lease; nothing evaluated (try again)"
    holder, until = current
    shown = until.isoformat() if isinstance(until, datetime) else str(until)
    return f"another alert evaluator is active ({holder}, lease until {shown}); nothing evaluated"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.alerts", description="StreamPulse alert evaluator")
    parser.add_argument("--once", action="store_true", help="evaluate once and exit")
    parser.add_argument("--url", help="database URL (default: DATABASE_URL)")
    sub = parser.add_subparsers(dest="command")
    test = sub.add_parser("test-email", help="send a test email and exit")
    test.add_argument("--to", action="append", default=None,
                      help="recipient (repeatable; default ALERT_EMAIL_TO)")
    args = parser.parse_args(argv)

    settings = get_settings()
    configure_logging(settings)

    if args.command == "test-email":
        from api.alerts.mailer import send_test_email

        try:
            sent = send_test_email(settings, args.to)
        except StreamPulseError as exc:
            print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
            return 1
        _out(f"sent {sent.message_id} to {', '.join(sent.recipients)} ({sent.attempts} attempt(s))")
        return 0

    from api.alerts.evaluator import AlertEvaluator
    from db.database import open_database

    try:
        db = open_database(settings, url=args.url)
    except StreamPulseError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    try:
        evaluator = AlertEvaluator(settings, db)
    except StreamPulseError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        db.close()
        return 2
    try:
        if args.once:
            events = evaluator.evaluate_once()
            if not evaluator.lease.held:
                _out(_standby_line(evaluator, db))
                return EXIT_STANDBY
            for event in events:
                _out(event.model_dump_json())
            evaluator.lease.release()
            return 0
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        evaluator.run(stop)
        return 0
    finally:
        db.close()


if __name__ == "__main__":
    sys.exit(main())
