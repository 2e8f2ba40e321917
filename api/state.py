"""What one API process holds: settings, the database (once reachable), the notifier, metrics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from api.metrics import ApiMetrics

if TYPE_CHECKING:
    from api.notifier import SentimentHub, TweetNotifier
    from pipeline.settings import Settings


@dataclass
class AppState:
    settings: Settings
    metrics: ApiMetrics
    db: Any = None  # db.database.Database once open_database succeeded
    db_error: str | None = "connecting to the database"
    owns_db: bool = False  # opened here (closed at shutdown), not passed in by the caller
    notifier: TweetNotifier | None = None
    sentiment_hub: SentimentHub | None = None
    evaluator: Any = None
    tasks: list[asyncio.Task] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def ws_clients(self) -> int:
        n = len(self.notifier.subscribers) if self.notifier else 0
        return n + (len(self.sentiment_hub.subscribers) if self.sentiment_hub else 0)
