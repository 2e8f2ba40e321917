"""The StreamPulse command line: `python -m pipeline <command>`.

    produce --source mock|replay|x [--file PATH] [--speed FACTOR|max] [--retime] [--keywords ...]
    process                      the sentiment processor (needs KAFKA_BOOTSTRAP_SERVERS)
    ingest                       the DB ingestor (needs KAFKA_BOOTSTRAP_SERVERS)
    run [--source ...] [--file PATH] [--speed ...] [--no-ui] [--exit-when-done]
    dead-letters list [--limit N] [--json]
    dead-letters replay [--seq N ...] [--all]
    evaluate --file PATH --engine vader|transformer ...
    health --stage NAME | --url URL   exit 0 when healthy (docker-compose healthchecks)

Exit codes: 0 done, 1 a stage failed, 2 a setting or argument is wrong.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import sys
import threading
from typing import Any

from pipeline.errors import ConfigError, StageStopped, StreamPulseError
from pipeline.settings import Settings, get_settings

logger = logging.getLogger("pipeline")

NEEDS_KAFKA = ("`python -m pipeline {cmd}` runs one stage against a Kafka broker, so it needs "
               "KAFKA_BOOTSTRAP_SERVERS (e.g. KAFKA_BOOTSTRAP_SERVERS=localhost:9092). Without Kafka, "
               "`python -m pipeline run` runs every stage in one process on the embedded bus.")


def _keywords(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [part.strip() for value in values for part in value.split(",") if part.strip()]
    return out or None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description="StreamPulse pipeline stages.")
    sub = parser.add_subparsers(dest="command", required=True)

    def source_options(p: argparse.ArgumentParser, *, default: str | None) -> None:
        p.add_argument("--source", choices=("mock", "replay", "x"), default=default, required=default is None,
                       help="where tweets come from")
        p.add_argument("--file", help="replay: a .csv or .jsonl export of tweets")
        p.add_argument("--speed", default="max",
                       help="replay: original spacing divided by FACTOR, or 'max' (default) for no pacing")
        p.add_argument("--retime", action="store_true",
                       help="replay: shift timestamps so the first tweet is now (anchor persisted)")
        p.add_argument("--keywords", nargs="+", metavar="KEYWORD",
                       help="keywords (space- or comma-separated) instead of the tracked_keywords table")

    produce = sub.add_parser("produce", help="publish tweets to raw_tweets (needs Kafka)")
    source_options(produce, default=None)
    for name, text in (("process", "score raw_tweets into analyzed_tweets (needs Kafka)"),
                       ("ingest", "store analyzed_tweets in the database (needs Kafka)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--group-id", help="consumer group (default from settings)")
    run = sub.add_parser("run", help="everything in one process (embedded bus + SQLite by default)")
    source_options(run, default="mock")
    run.add_argument("--no-ui", action="store_true", help="do not start the API and the dashboard")
    run.add_argument("--exit-when-done", action="store_true",
                     help="replay: stop once the file is played and everything is stored")

    dead = sub.add_parser("dead-letters", help="inspect and replay dead letters")
    dsub = dead.add_subparsers(dest="action", required=True)
    lst = dsub.add_parser("list", help="show dead letters, newest first")
    lst.add_argument("--limit", type=int, default=50)
    lst.add_argument("--json", action="store_true", help="one JSON object per line, payload decoded")
    lst.add_argument("--all", action="store_true", help="include letters already replayed")
    rep = dsub.add_parser("replay", help="send dead letters back through the pipeline")
    rep.add_argument("--seq", type=int, nargs="+", help="only these letters (default: all not yet replayed)")
    rep.add_argument("--limit", type=int, default=500)

    sub.add_parser("evaluate", help="accuracy of an engine on a labelled file (see evaluate --help)",
                   add_help=False)
    sub.add_parser("health", help="exit 0 when a stage's heartbeat (or a URL) is fresh (see health --help)",
                   add_help=False)
    return parser


def _setup(args: argparse.Namespace) -> Settings:
    from pipeline.logging_setup import configure_logging

    settings = get_settings()
    configure_logging(settings)
    return settings


def cmd_produce(settings: Settings, args: argparse.Namespace, stop: threading.Event) -> int:
    if settings.embedded:
        raise ConfigError(NEEDS_KAFKA.format(cmd="produce"))
    from pipeline.bus import make_bus
    from pipeline.runner import check_source_options, producer_monitor, producer_target
    from pipeline.stage import open_db

    check_source_options(settings, source=args.source, file=args.file, speed=args.speed)
    db = open_db(settings, stop)
    target = producer_target(settings, source=args.source, bus=make_bus(settings), db=db, stop=stop,
                             file=args.file, speed=args.speed, retime=args.retime,
                             keywords=_keywords(args.keywords))
    sent = target()
    producer_monitor(settings, f"producer-{args.source}", db=db, total=sent or 0,
                     source=args.source).mark_stopped()
    return 0


def cmd_stage(settings: Settings, args: argparse.Namespace, stop: threading.Event) -> int:
    if settings.embedded:
        raise ConfigError(NEEDS_KAFKA.format(cmd=args.command))
    stage: Any
    if args.command == "process":
        from pipeline.processor import Processor

        stage = Processor(settings, group_id=args.group_id)
    else:
        from pipeline.ingestor import Ingestor

        stage = Ingestor(settings, group_id=args.group_id)
    stage.run(stop)
    if stage.monitor is not None:
        stage.monitor.mark_stopped()
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace, stop: threading.Event) -> int:
    from pipeline.runner import Runner

    return Runner(settings, source=args.source, file=args.file, speed=args.speed, retime=args.retime,
                  keywords=_keywords(args.keywords), ui=not args.no_ui,
                  exit_when_done=args.exit_when_done).run(stop)


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def cmd_dead_letters(settings: Settings, args: argparse.Namespace, stop: threading.Event) -> int:
    from db.database import open_database
    from pipeline import deadletters
    from pipeline.stage import describe, safe_url

    try:  # once, not retried: a person is waiting at the terminal (like `python -m db init`)
        db = open_database(settings)
    except Exception as exc:
        where = safe_url(settings.database_url)
        raise ConfigError(f"database {where} is unreachable: {describe(exc)}") from exc
    if args.action == "list":
        if args.all:
            from db.queries import dead_letters

            rows = dead_letters(db, limit=args.limit)
        else:
            rows = deadletters.pending(db, limit=args.limit)
        for row in rows:
            payload = base64.b64decode(row["payload_b64"])
            if args.json:
                entry: dict[str, Any] = {k: v for k, v in row.items() if k != "payload_b64"}
                entry["payload"] = payload.decode("utf-8", "replace")
                _out(json.dumps(entry, default=str, ensure_ascii=False))
            else:
                preview = payload[:80].decode("utf-8", "replace").replace("\n", " ")
                state = " (replayed)" if row.get("replayed_at") else ""
                where = f"{row.get('topic')}[{row.get('partition')}] {row.get('offset')}"
                _out(f"#{row['seq']} {row['failed_at']} {row['stage']} {where}{state}\n"
                     f"    reason:  {row['reason']}\n    payload: {preview}")
        if not args.json:
            _out(f"{len(rows)} dead letter(s)")
        return 0
    letters = deadletters.pending(db, seqs=args.seq, limit=args.limit)
    if not letters:
        _out("no dead letters to replay")
        return 0
    if settings.embedded:
        done, failing = deadletters.replay_embedded(settings, db, letters)
    else:
        from pipeline.bus import make_bus

        producer = make_bus(settings).producer()
        try:
            done, failing = deadletters.replay_to_bus(settings, letters, producer)
        finally:
            producer.close()
    from db.writes import mark_dead_letters_replayed

    mark_dead_letters_replayed(db, done)
    for seq, why in failing:
        _out(f"#{seq} still fails: {why}")
    _out(f"replayed {len(done)} dead letter(s); {len(failing)} still failing")
    return 0 if not failing else 1


COMMANDS = {"produce": cmd_produce, "process": cmd_stage, "ingest": cmd_stage, "run": cmd_run,
            "dead-letters": cmd_dead_letters}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "evaluate":
        from pipeline.evaluate import main as evaluate_main

        return evaluate_main(argv[1:])
    if argv and argv[0] == "health":
        from pipeline.health import main as health_main

        return health_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        settings = _setup(args)
    except Exception as exc:  # noqa: BLE001 - a bad setting: say which, do not dump a traceback
        sys.stderr.write(f"error: invalid settings: {exc}\n")
        return 2
    from pipeline.stage import install_stop_handlers

    stop = threading.Event()
    install_stop_handlers(stop)
    try:
        return COMMANDS[args.command](settings, args, stop)
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except StageStopped:
        return 0
    except StreamPulseError as exc:
        logger.error("%s", exc)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
