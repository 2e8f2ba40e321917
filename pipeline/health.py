"""Health checks usable as docker-compose healthchecks: exit 0 when healthy, 1 when not, one line why.

    python -m pipeline health --stage processor     # this container's heartbeat row is fresh
    python -m pipeline health --url http://127.0.0.1:8000/health   # an HTTP endpoint answers 2xx

(`python -m pipeline.health ...` is the same without the CLI in front.)

A stage is healthy when a heartbeat row of that stage (`processor`, or `producer` for any of
`producer-x`/`producer-mock`/`producer-replay`) written from THIS host (the container's hostname is
part of the instance name) is younger than `--max-age` seconds (default: 3 heartbeat intervals,
at least 15 s). So with `--scale processor=3` each replica is judged by its own row. A producer
paused by the X rate limit is alive and healthy; the line says until when it is paused. A stage that
shut down cleanly (heartbeat details {"state": "stopped"}) is not running: exit 1, "stopped at ...".
An --url that is not http(s)://host... or an unknown --stage is a usage error: exit 2.
"""

from __future__ import annotations

import argparse
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError

from pipeline.errors import StreamPulseError
from pipeline.settings import Settings, get_settings


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    message: str


def stage_matches(stage: str, wanted: str) -> bool:
    return stage == wanted or stage.startswith(f"{wanted}-")


def check_stage(settings: Settings, *, stage: str, host: str | None = None, max_age: float | None = None,
                now: datetime | None = None) -> HealthResult:
    """Is there a fresh heartbeat of `stage` from `host` (None = from any host)?"""
    from db.database import open_database
    from db.queries import heartbeats

    limit = max_age if max_age is not None else max(3 * settings.heartbeat_interval_seconds, 15.0)
    now = now or datetime.now(UTC)
    try:
        db = open_database(settings, init=False)
        try:
            rows = [h for h in heartbeats(db) if stage_matches(h.stage, stage)]
        finally:
            db.engine.dispose()
    except (StreamPulseError, SQLAlchemyError) as exc:
        return HealthResult(False, f"{stage}: database unreachable: {type(exc).__name__}: {exc}"[:500])
    if host is not None:
        # instance names are `<stage>@<hostname>:<pid>` (pipeline.stage.instance_name)
        rows = [h for h in rows if f"@{host}:" in h.instance]
    if not rows:
        where = f" from host {host}" if host else ""
        return HealthResult(False, f"{stage}: no heartbeat{where} yet")
    newest = max(rows, key=lambda h: h.last_seen)
    if (newest.details or {}).get("state") == "stopped":
        at = newest.details.get("stopped_at") or newest.last_seen.isoformat()
        return HealthResult(False, f"{newest.instance}: not running, stopped at {at}")
    age = (now - newest.last_seen).total_seconds()
    if age > limit:
        return HealthResult(False, f"{newest.instance}: last heartbeat {age:.0f}s ago (limit {limit:.0f}s)")
    parts = [f"{newest.instance}: healthy, heartbeat {age:.1f}s ago"]
    if newest.engine:
        parts.append(f"engine {newest.engine}")
    if newest.rate is not None:
        parts.append(f"{newest.rate:.1f}/s")
    if newest.lag is not None:
        parts.append(f"lag {newest.lag}")
    details = newest.details or {}
    if details.get("rate_limited_until"):
        parts.append(f"X rate-limited until {details['rate_limited_until']}")
    if details.get("fallback_active"):
        parts.append("producing mock tweets meanwhile")
    return HealthResult(True, ", ".join(parts))


def url_problem(url: str) -> str | None:
    """Why `url` cannot be checked (None when it is an http(s) URL with a host)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"--url {url!r} is not an http:// or https:// URL (e.g. http://127.0.0.1:8000/health)"
    return None


def check_url(url: str, *, timeout: float = 5.0) -> HealthResult:
    problem = url_problem(url)
    if problem:
        return HealthResult(False, problem)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return HealthResult(200 <= response.status < 300, f"{url}: HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        return HealthResult(False, f"{url}: HTTP {exc.code}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return HealthResult(False, f"{url}: {exc}")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m pipeline health", description=__doc__,
                                               formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--stage", help="stage name: producer, processor, ingestor (prefix match on '-')")
    what.add_argument("--url", help="HTTP URL that must answer 2xx")
    parser.add_argument("--any-host", action="store_true",
                        help="accept a heartbeat from any host, not only this container")
    parser.add_argument("--max-age", type=float, default=None, help="seconds a heartbeat stays fresh")
    parser.add_argument("--timeout", type=float, default=5.0, help="HTTP timeout (--url)")
    return parser


KNOWN_STAGES = ("producer", "producer-x", "producer-mock", "producer-replay", "processor", "ingestor")


def run(args: argparse.Namespace) -> int:
    """Run the check `args` describe, print its one line, return the exit status (2: bad argument)."""
    if args.url and url_problem(args.url):
        print(f"UNHEALTHY error: {url_problem(args.url)}")  # noqa: T201 - CLI output
        return 2
    if args.stage and args.stage not in KNOWN_STAGES:
        print(f"UNHEALTHY error: unknown stage {args.stage!r}; "  # noqa: T201 - CLI output
              f"known stages: {', '.join(KNOWN_STAGES)}")
        return 2
    if args.url:
        result = check_url(args.url, timeout=args.timeout)
    else:
        host = None if args.any_host else socket.gethostname()
        result = check_stage(get_settings(), stage=args.stage, host=host, max_age=args.max_age)
    print(("OK " if result.ok else "UNHEALTHY ") + result.message)  # noqa: T201 - CLI output
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
