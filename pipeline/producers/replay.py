"""The replay producer: a CSV or JSONL export of real tweets, played back as a stream.

- Columns (names set by REPLAY_*_COLUMN): `text` required; `id`, `created_at`, `keyword`, `label`
  optional. `label` (negative/neutral/positive, or neg/neu/pos, -1/0/1) becomes gold_label. A row
  without a keyword gets the first of --keywords / KEYWORDS; a row without an id gets a deterministic
  one (source, keyword, timestamp or row number, text), so a replay sent twice is recognised.
- Rows are sorted by created_at (stable; rows without one keep file order, after the others) and
  paced by their original spacing divided by --speed, or sent as fast as possible with `max`.
- --retime shifts the stream so its first tweet is "now": created_at = anchor + offset / speed
  (offset from the first tweet; speed 1 for `max`). The anchor is persisted (pipeline_state) per
  file and speed, so a restarted replay re-sends the same (id, keyword, created_at) -- an idempotent
  no-op in the DB -- catches up to the live position, and carries on. Without --retime the original
  timestamps are kept.
- created_at may be ISO 8601 (`Z` or an offset; naive = UTC), `2015-02-24 11:35:52 -0800`, Twitter v1
  (`Tue Feb 24 11:40:00 +0000 2015`), or epoch seconds (milliseconds from 1e11 up) as a number or
  digits. A row whose created_at is present but none of these (or out of range) is sent on with the
  value unparsed, so the processor dead-letters it with a `created_at: ...` reason; it is never
  silently stamped "now". A row with NO created_at gets the file's "untimed anchor" plus its row
  number in seconds (row 7: anchor + 7 s). The anchor is the time of the first replay of this file,
  persisted (pipeline_state, key from the file's path, size and mtime), so replaying the same file
  again re-sends the same (id, keyword, created_at) and stores nothing twice; an edited file (new
  size/mtime) gets a new anchor. Without a database the anchor is the start of this replay.
- A line that is not UTF-8 (CSV or JSONL) or not a JSON object (JSONL) is sent on as its raw bytes, so
  the processor dead-letters it ("not UTF-8" / "not JSON"); the rest of the file is replayed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from pipeline.bus.base import Bus
from pipeline.contracts import Label, RawTweet, derive_id, utc
from pipeline.errors import ConfigError
from pipeline.producers.base import publish_all
from pipeline.settings import Settings

if TYPE_CHECKING:
    from db.database import Database

logger = logging.getLogger(__name__)

STAGE = "producer-replay"
_LABELS: dict[str, Label] = {
    "negative": "negative", "neg": "negative", "-1": "negative",
    "neutral": "neutral", "neu": "neutral", "0": "neutral",
    "positive": "positive", "pos": "positive", "1": "positive",
}


MIN_SPEED = 1e-3  # slower than this, one minute of the file takes 17 hours: surely a typo
MAX_SPEED = 1e6  # faster than this is `max` in all but name (and 1/speed stays representable)


def parse_speed(value: str | float | None) -> float | None:
    """`max` (or None) = as fast as possible; else a finite factor within [MIN_SPEED, MAX_SPEED]
    (2 = twice real time). nan, inf and 1e-300 are refused: they overflow the pacing arithmetic."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "max"):
        return None
    try:
        speed = float(value)
    except ValueError as exc:
        raise ConfigError(f"--speed must be a number > 0 or 'max', got {value!r}") from exc
    if speed <= 0:
        raise ConfigError(f"--speed must be > 0, got {speed}")
    if not math.isfinite(speed) or not MIN_SPEED <= speed <= MAX_SPEED:
        raise ConfigError(f"--speed must be a finite number within [{MIN_SPEED:g}, {MAX_SPEED:g}] "
                          f"or 'max', got {value!r}")
    return speed


@dataclass
class Row:
    n: int  # row number in the file, from 1
    id: str | None
    text: Any
    created_at: datetime | None
    created_raw: str | None
    keyword: str | None
    label: Label | None
    raw: bytes | None = None  # a line that is not UTF-8 / not JSON: sent on as is, to be dead-lettered
    time_error: str | None = None  # created_at present but unreadable: sent on unparsed ...
    time_value: Any = None  # ... as this original value


_DIGITS = re.compile(r"[+-]?\d+(\.\d+)?")
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S %z", "%a %b %d %H:%M:%S %z %Y")
_MS_FROM = 1e11  # epoch seconds this large are year 5138: such a number is milliseconds
_BAD_BYTES = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" makes of non-UTF-8 bytes
_DATETIME = TypeAdapter(datetime)


class BadTime(ValueError):
    """A created_at that is present but not a timestamp this replayer can read."""


def _from_epoch(value: float) -> datetime:
    if not math.isfinite(value):
        raise BadTime(f"{value} is not a timestamp")
    seconds = value / 1000 if value >= _MS_FROM else value
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise BadTime(f"epoch {value!r} is out of range") from exc


def _parse_time(value: Any) -> datetime | None:
    """None when created_at is missing; raises BadTime when it is present but unreadable."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadTime(f"{value!r} is not a timestamp")
    if isinstance(value, int | float):
        return _from_epoch(float(value))
    text = value.strip()
    if _DIGITS.fullmatch(text):
        return _from_epoch(float(text))
    iso = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    try:
        return utc(datetime.fromisoformat(iso))
    except ValueError:
        pass
    for fmt in _TIME_FORMATS:
        try:
            return utc(datetime.strptime(text, fmt))
        except ValueError:
            continue
    raise BadTime(f"{text[:80]!r} is not a timestamp (ISO 8601, Twitter v1 or epoch seconds/ms)")


def _unparsed_on_the_wire(value: Any) -> str:
    """created_at as sent for a row whose timestamp could not be read: the original text, made sure
    to be rejected by the contract (pydantic would read some numbers differently, e.g. as ms)."""
    text = value if isinstance(value, str) else json.dumps(value)
    try:
        _DATETIME.validate_python(text)
    except ValidationError:
        return text
    return f"unreadable timestamp {text}"


_BOM = b"\xef\xbb\xbf"


def _csv_records(path: Path, text_column: str) -> list[dict[str, Any] | bytes]:
    """CSV rows as dicts; a row with bytes that are not UTF-8 as its raw bytes (re-joined as CSV)."""
    data = path.read_bytes()
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    # surrogateescape keeps undecodable bytes (as U+DC80..U+DCFF) so one bad row costs only itself
    reader = csv.DictReader(io.StringIO(data.decode("utf-8", "surrogateescape"), newline=""))
    if reader.fieldnames is None or text_column not in reader.fieldnames:
        raise ConfigError(f"{path}: no {text_column!r} column (set REPLAY_TEXT_COLUMN); "
                          f"columns are {reader.fieldnames}")
    records: list[dict[str, Any] | bytes] = []
    for rec in reader:
        values: list[str] = []
        for value in rec.values():
            values.extend(value if isinstance(value, list) else ["" if value is None else value])
        if any(_BAD_BYTES.search(v) for v in values):
            buf = io.StringIO()
            csv.writer(buf).writerow(values)
            records.append(buf.getvalue().rstrip("\r\n").encode("utf-8", "surrogateescape"))
        else:
            records.append(rec)
    return records


def _jsonl_records(path: Path) -> list[dict[str, Any] | bytes]:
    """One JSON object per line; a line that is not UTF-8 or not a JSON object as its raw bytes."""
    records: list[dict[str, Any] | bytes] = []
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if lineno == 1 and line.startswith(_BOM):
                line = line[len(_BOM):]
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                logger.warning("%s:%d: %s; sending the line on to be dead-lettered", path, lineno,
                               "not UTF-8" if isinstance(exc, UnicodeDecodeError) else "not JSON")
                records.append(raw)
                continue
            records.append(obj if isinstance(obj, dict) else raw)
    return records


def check_file(path: Path, settings: Settings) -> None:
    """Raise ConfigError unless `path` is a replayable file (exists, known suffix, CSV has the text
    column): checked before anything starts, so a typo is one clear error line."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ConfigError(f"replay file {path} does not exist (--file)")
    if suffix not in (".csv", ".jsonl", ".ndjson", ".json"):
        raise ConfigError(f"replay file {path} must end in .csv or .jsonl")
    if suffix == ".csv":
        with path.open("rb") as fh:
            head = fh.readline().decode("utf-8-sig", "replace")
        columns = next(csv.reader([head]), [])
        if settings.replay_text_column not in columns:
            raise ConfigError(f"{path}: no {settings.replay_text_column!r} column (set REPLAY_TEXT_COLUMN); "
                              f"columns are {columns}")


def read_rows(path: Path, settings: Settings) -> list[Row]:
    """Read a .csv or .jsonl/.ndjson/.json file into rows sorted by created_at."""
    s = settings
    check_file(path, s)
    if path.suffix.lower() == ".csv":
        records = _csv_records(path, s.replay_text_column)
    else:
        records = _jsonl_records(path)
    rows: list[Row] = []
    unknown_labels: set[str] = set()
    for n, rec in enumerate(records, 1):
        if isinstance(rec, bytes):
            rows.append(Row(n=n, id=None, text=None, created_at=None, created_raw=None, keyword=None,
                            label=None, raw=rec))
            continue
        raw_label = rec.get(s.replay_label_column)
        label = None
        if raw_label not in (None, ""):
            label = _LABELS.get(str(raw_label).strip().lower())
            if label is None:
                unknown_labels.add(str(raw_label))
        created_raw = rec.get(s.replay_created_at_column)
        try:
            created_at, time_error = _parse_time(created_raw), None
        except BadTime as exc:
            created_at, time_error = None, str(exc)
        rid = rec.get(s.replay_id_column)
        keyword = rec.get(s.replay_keyword_column)
        rows.append(Row(n=n, id=str(rid).strip() if rid not in (None, "") else None,
                        text=rec.get(s.replay_text_column), created_at=created_at,
                        created_raw=None if created_raw in (None, "") else str(created_raw),
                        keyword=str(keyword).strip() if keyword not in (None, "") else None, label=label,
                        time_error=time_error, time_value=created_raw if time_error else None))
    if unknown_labels:
        logger.warning("%s: labels %s are not negative/neutral/positive; gold_label left empty", path,
                       sorted(unknown_labels)[:5])
    far = datetime.max.replace(tzinfo=UTC)
    rows.sort(key=lambda r: r.created_at or far)  # stable: ties keep file order
    return rows


def anchor_key(path: Path, speed: float | None) -> str:
    digest = hashlib.sha1(f"{path.resolve()}|{speed or 'max'}".encode()).hexdigest()[:16]
    return f"replay.retime_anchor.{digest}"


def untimed_anchor_key(path: Path) -> str:
    """pipeline_state key of the timestamp given to rows without created_at: same file, same key."""
    stat = path.stat()
    digest = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return f"replay.untimed_anchor.{digest}"


def load_anchor(db: Database | None, key: str, *, what: str = "replay --retime") -> datetime:
    """The persisted anchor under `key` (retime: per file and speed), or now (persisted) on the first run."""
    if db is None:
        return datetime.now(UTC)
    from db.writes import get_state, set_state

    stored = get_state(db, key)
    if stored:
        anchor = datetime.fromisoformat(stored)
        logger.info("%s: resuming with the anchor %s (%s)", what, anchor.isoformat(), key)
        return anchor
    anchor = datetime.now(UTC)
    set_state(db, key, anchor.isoformat())
    return anchor


def replay_tweets(rows: list[Row], settings: Settings, stop: threading.Event, *, speed: float | None,
                  keyword: str | None, retime_anchor: datetime | None = None,
                  untimed_anchor: datetime | None = None,
                  ) -> Iterator[RawTweet | tuple[str, bytes]]:
    """RawTweets in created_at order, paced by `speed` (None = max). A row that is not a valid RawTweet
    is yielded as (key, JSON bytes), to be dead-lettered downstream with its reason (nothing dropped).
    A row without created_at is stamped `untimed_anchor` (default: now) + its row number in seconds."""
    untimed = untimed_anchor or datetime.now(UTC)
    timed = [r.created_at for r in rows if r.created_at is not None]
    t0 = timed[0] if timed else None
    wall0 = time.time() if retime_anchor is None else retime_anchor.timestamp()
    time_speed = speed or 1.0
    for row in rows:
        if stop.is_set():
            return
        if row.raw is not None:
            logger.warning("replay row %d is not UTF-8 or not a JSON object; sending it to be dead-lettered",
                           row.n)
            yield "replay-" + hashlib.sha256(row.raw).hexdigest()[:32], row.raw
            continue
        offset = (row.created_at - t0).total_seconds() if row.created_at is not None and t0 else None
        if speed is not None and offset is not None:
            wait = wall0 + offset / speed - time.time()
            if wait > 0 and stop.wait(wait):
                return
        created = row.created_at
        if created is not None and retime_anchor is not None and offset is not None:
            created = retime_anchor + timedelta(seconds=offset / time_speed)
        kw = row.keyword or keyword
        data: dict[str, Any] = {
            "text": row.text, "created_at": created or untimed + timedelta(seconds=row.n), "keyword": kw,
            "source": "replay", "gold_label": row.label, "lang": None,
        }
        data["id"] = row.id or (derive_id(source="replay", keyword=kw or "", text=str(row.text or ""),
                                          created_at=row.created_raw or f"row{row.n}"))
        if row.time_error is not None:
            logger.warning("replay row %d: created_at %s; sending it to be dead-lettered", row.n,
                           row.time_error)
            data["created_at"] = _unparsed_on_the_wire(row.time_value)
            yield data["id"], json.dumps(data, default=str).encode("utf-8")
            continue
        try:
            yield RawTweet.model_validate(data)
        except ValidationError as exc:
            logger.warning("replay row %d is not a valid tweet (%s); sending it to be dead-lettered",
                           row.n, exc.errors()[0]["msg"])
            yield data["id"], json.dumps(data, default=str).encode("utf-8")


def run_replay_producer(settings: Settings, *, bus: Bus, db: Database | None, stop: threading.Event,
                        file: str | Path, speed: str | float | None = "max", retime: bool = False,
                        keywords: list[str] | None = None) -> int:
    """Entry point for `produce --source replay`: returns when the file is done (or on stop)."""
    path = Path(file)
    pace = parse_speed(speed)
    check_file(path, settings)
    rows = read_rows(path, settings)
    keyword = (keywords or settings.keywords or [None])[0]
    anchor = load_anchor(db, anchor_key(path, pace)) if retime else None
    needs_untimed = any(r.created_at is None and r.raw is None and r.time_error is None for r in rows)
    untimed = load_anchor(db, untimed_anchor_key(path), what="replay rows without created_at"
                          ) if needs_untimed else None
    logger.info("replaying %d rows from %s at %s%s", len(rows), path,
                "max speed" if pace is None else f"{pace:g}x", ", retimed to now" if anchor else "")
    return publish_all(settings, bus=bus, db=db, stop=stop, stage=STAGE,
                       tweets=replay_tweets(rows, settings, stop, speed=pace, keyword=keyword,
                                            retime_anchor=anchor, untimed_anchor=untimed),
                       details=lambda: {"source": "replay", "file": path.name})
