"""Test support: a real uvicorn server on a free port in a thread, and replayed airline tweets."""

from __future__ import annotations

import csv
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import uvicorn

from pipeline.contracts import AnalyzedTweet, RawTweet

ROOT = Path(__file__).resolve().parents[2]
AIRLINES = ["Virgin America", "United", "Southwest", "Delta", "US Airways", "American"]


def read_airline_csv(path: Path, limit: int | None = None) -> list[RawTweet]:
    """The airline CSV as a replayer reads it: multi-line texts, -08:00 offsets, gold labels."""
    out: list[RawTweet] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out.append(
                RawTweet(
                    id=row["id"],
                    text=row["text"],
                    created_at=row["created_at"],
                    keyword=row["keyword"],
                    source="replay",
                    gold_label=row["label"] or None,
                    lang="en",
                )
            )
            if limit is not None and len(out) >= limit:
                break
    return out


def score(raw: list[RawTweet]) -> list[AnalyzedTweet]:
    """Scored with the real offline engine (VADER), as the processor would."""
    from pipeline.engines.vader import VaderEngine

    engine = VaderEngine()
    now = datetime.now(UTC)
    results = engine.classify([t.text for t in raw])
    return [
        AnalyzedTweet(
            **t.model_dump(),
            label=s.label,
            p_neg=s.p_neg,
            p_neu=s.p_neu,
            p_pos=s.p_pos,
            score=s.score,
            engine=engine.name,
            processed_at=now,
        )
        for t, s in zip(raw, results, strict=True)
    ]


class LiveServer:
    """uvicorn.Server running `create_app(settings)` in a background thread."""

    def __init__(
        self, settings, *, database=None, sndbuf: int | None = None, log_level: str = "warning"
    ) -> None:
        from api.main import create_app

        # Our own listening socket, so a test can cap the send buffer that accepted sockets inherit
        # (as a slow remote peer's receive window would; loopback autotuning otherwise hides it).
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sndbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.app = create_app(settings, database=database)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level=log_level,
            lifespan="on",
            ws_ping_interval=settings.ws_ping_seconds,
            ws_ping_timeout=settings.ws_ping_seconds,
            timeout_graceful_shutdown=3,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name=f"uvicorn-{self.port}", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def state(self):
        return self.app.state.sp

    def start(self, timeout: float = 30.0) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


@contextmanager
def live_server(
    settings, *, database=None, sndbuf: int | None = None, log_level: str = "warning"
) -> Iterator[LiveServer]:
    server = LiveServer(settings, database=database, sndbuf=sndbuf, log_level=log_level).start()
    try:
        yield server
    finally:
        server.stop()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


_made = iter(range(1, 10**9))


def make_tweet(
    *,
    keyword: str = "United",
    label: str = "neutral",
    score: float = 0.0,
    text: str = "a tweet",
    created_at: datetime | None = None,
) -> AnalyzedTweet:
    """A hand-made scored tweet (for cases where the airline data does not matter)."""
    probs = {"negative": (0.8, 0.15, 0.05), "neutral": (0.1, 0.8, 0.1), "positive": (0.05, 0.15, 0.8)}[label]
    return AnalyzedTweet(
        id=f"api-test-{next(_made)}",
        text=text,
        created_at=created_at or datetime.now(UTC),
        keyword=keyword,
        source="mock",
        label=label,
        p_neg=probs[0],
        p_neu=probs[1],
        p_pos=probs[2],
        score=score,
        engine="test",
        processed_at=datetime.now(UTC),
    )
