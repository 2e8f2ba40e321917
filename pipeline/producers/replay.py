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
- Rows without a timestamp are stamped with the time they are sent.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

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


def parse_speed(value: str | float | None) -> float | None:
    """`max` (or None) = as fast as possible; else a factor > 0 (2 = twice real time)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "max"):
        return None
    try:
        speed = float(value)
    except ValueError as exc:
        raise ConfigError(f"--speed must be a number > 0 or 'max', got {value!r}") from exc
    if speed <= 0:
        raise ConfigError(f"--speed must be > 0, got {speed}")
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


def _parse_time(value: Any) -> datetime | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    text = str(value).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        return utc(datetime.fromisoformat(text))
    except ValueError:
        try:
            return utc(datetime.strptime(text, "%Y-%m-%d %H:%M:%S %z"))
        except ValueError:
            return None


def read_rows(path: Path, settings: Settings) -> list[Row]:
    """Read a .csv or .jsonl/.ndjson/.json file into rows sorted by created_at."""
    s = settings
    suffix = path.suffix.lower()
    if not path.exists():
        raise ConfigError(f"replay file {path} does not exist")
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or s.replay_text_column not in reader.fieldnames:
                raise ConfigError(f"{path}: no {s.replay_text_column!r} column (set REPLAY_TEXT_COLUMN); "
                                  f"columns are {reader.fieldnames}")
            records = list(reader)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        records = []
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{path}:{lineno}: not a JSON object per line: {exc}") from exc
                records.append(obj if isinstance(obj, dict) else {})
    else:
        raise ConfigError(f"replay file {path} must end in .csv or .jsonl")
    rows: list[Row] = []
    unknown_labels: set[str] = set()
    for n, rec in enumerate(records, 1):
        raw_label = rec.get(s.replay_label_column)
        label = None
        if raw_label not in (None, ""):
            label = _LABELS.get(str(raw_label).strip().lower())
            if label is None:
                unknown_labels.add(str(raw_label))
        created_raw = rec.get(s.replay_created_at_column)
        rid = rec.get(s.replay_id_column)
        keyword = rec.get(s.replay_keyword_column)
        rows.append(Row(n=n, id=str(rid).strip() if rid not in (None, "") else None,
                        text=rec.get(s.replay_text_column), created_at=_parse_time(created_raw),
                        created_raw=None if created_raw in (None, "") else str(created_raw),
                        keyword=str(keyword).strip() if keyword not in (None, "") else None, label=label))
    if unknown_labels:
        logger.warning("%s: labels %s are not negative/neutral/positive; gold_label left empty", path,
                       sorted(unknown_labels)[:5])
    far = datetime.max.replace(tzinfo=UTC)
    rows.sort(key=lambda r: r.created_at or far)  # stable: ties keep file order
    return rows


def anchor_key(path: Path, speed: float | None) -> str:
    digest = hashlib.sha1(f"{path.resolve()}|{speed or 'max'}".encode()).hexdigest()[:16]
    return f"replay.retime_anchor.{digest}"


def load_anchor(db: Database | None, key: str) -> datetime:
    """The persisted retime anchor for this file and speed, or now (persisted) on the first run."""
    if db is None:
        return datetime.now(UTC)
    from db.writes import get_state, set_state

    stored = get_state(db, key)
    if stored:
        anchor = datetime.fromisoformat(stored)
        logger.info("replay --retime: resuming with the anchor %s (%s)", anchor.isoformat(), key)
        return anchor
    anchor = datetime.now(UTC)
    set_state(db, key, anchor.isoformat())
    return anchor


def replay_tweets(rows: list[Row], settings: Settings, stop: threading.Event, *, speed: float | None,
                  keyword: str | None, retime_anchor: datetime | None = None,
                  ) -> Iterator[RawTweet | tuple[str, bytes]]:
    """RawTweets in created_at order, paced by `speed` (None = max). A row that is not a valid RawTweet
    is yielded as (key, JSON bytes), to be dead-lettered downstream with its reason (nothing dropped)."""
    timed = [r.created_at for r in rows if r.created_at is not None]
    t0 = timed[0] if timed else None
    wall0 = time.time() if retime_anchor is None else retime_anchor.timestamp()
    time_speed = speed or 1.0
    for row in rows:
        if stop.is_set():
            return
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
            "text": row.text, "created_at": created or datetime.now(UTC), "keyword": kw,
            "source": "replay", "gold_label": row.label, "lang": None,
        }
        data["id"] = row.id or (derive_id(source="replay", keyword=kw or "", text=str(row.text or ""),
                                          created_at=row.created_raw or f"row{row.n}"))
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
    rows = read_rows(path, settings)
    keyword = (keywords or settings.keywords or [None])[0]
    anchor = load_anchor(db, anchor_key(path, pace)) if retime else None
    logger.info("replaying %d rows from %s at %s%s", len(rows), path,
                "max speed" if pace is None else f"{pace:g}x", ", retimed to now" if anchor else "")
    return publish_all(settings, bus=bus, db=db, stop=stop, stage=STAGE,
                       tweets=replay_tweets(rows, settings, stop, speed=pace, keyword=keyword,
                                            retime_anchor=anchor),
                       details=lambda: {"source": "replay", "file": path.name})
