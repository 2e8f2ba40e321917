"""The mock producer: realistic synthetic tweets for the tracked keywords at MOCK_RATE tweets/s.

Sentiment drift is scriptable with MOCK_DRIFT, `keyword:bias@start_s+duration_s`, several joined by
`;`. bias in [-1, 1]: -0.8 moves 80 % of the non-negative share of that keyword's tweets to negative
from `start_s` seconds after the producer started, for `duration_s` seconds (a negative burst an
alert can catch); +0.5 does the same towards positive. Keywords match case-insensitively.

Without --keywords the producer follows `tracked_keywords`, re-read every few seconds, so a keyword
added in the dashboard or API gets tweets without a restart. Tweets are tagged source="mock".
"""

from __future__ import annotations

import itertools
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pipeline.bus.base import Bus
from pipeline.contracts import Label, RawTweet
from pipeline.errors import ConfigError
from pipeline.producers.base import TrackedKeywords, publish_all
from pipeline.settings import Settings

if TYPE_CHECKING:
    from db.database import Database

logger = logging.getLogger(__name__)

STAGE = "producer-mock"
BASE_MIX: dict[Label, float] = {"negative": 0.3, "neutral": 0.4, "positive": 0.3}

_TEMPLATES: dict[Label, tuple[str, ...]] = {
    "positive": (
        "Absolutely love my new {kw}, best purchase this year!",
        "{kw} customer service was amazing today, thank you so much",
        "Great job {kw}, really impressed with the update",
        "So happy with {kw} right now, everything just works",
        "{kw} just made my day. Fantastic experience!",
        "Honestly {kw} keeps getting better. Love it",
        "Shoutout to the {kw} team, excellent support and super friendly",
        "Best experience I've had with {kw} in years, great value",
        "{kw} nailed it this time, wonderful job",
        "Really enjoying {kw} lately, awesome stuff",
    ),
    "negative": (
        "{kw} is the worst, totally disappointed",
        "Terrible experience with {kw} again. Never again.",
        "Why is {kw} so awful lately? Broken and useless",
        "I hate how {kw} treats its customers",
        "{kw} support is horrible, waited three hours for nothing",
        "Seriously {kw}? This is a disaster, so frustrating",
        "Worst customer service ever from {kw}, angry and done",
        "{kw} lost my money and nobody cares. Pathetic.",
        "So sick of {kw} failing every single time",
        "Avoid {kw}, rude staff and a terrible product",
    ),
    "neutral": (
        "Anyone know what time the {kw} event starts?",
        "Reading an article about {kw} this morning",
        "{kw} announced a new update today",
        "Is {kw} open on Sundays?",
        "Thinking about switching to {kw}, still deciding",
        "Just saw a {kw} ad on the train",
        "{kw} quarterly numbers come out next week",
        "Comparing {kw} with the alternatives for work",
        "Does {kw} ship to Canada?",
        "Heading to the {kw} store later to check it out",
    ),
}
_OPENERS = ("", "", "", "Ok so ", "Update: ", "Wow. ", "Hmm, ", "@user ")
_TAILS = ("", "", "", " #{tag}", " #{tag} #news", " lol", " 🙂", " 😡", " 🤔", " !!", " ...")


@dataclass(frozen=True)
class Drift:
    keyword: str
    bias: float
    start_s: float
    duration_s: float

    def active(self, elapsed_s: float) -> bool:
        return self.start_s <= elapsed_s < self.start_s + self.duration_s


_DRIFT = re.compile(r"^\s*(?P<kw>[^:]+?)\s*:\s*(?P<bias>[-+]?\d*\.?\d+)\s*@\s*(?P<start>\d*\.?\d+)"
                    r"\s*\+\s*(?P<dur>\d*\.?\d+)\s*$")


def parse_drift(script: str | None) -> list[Drift]:
    """Parse MOCK_DRIFT, e.g. 'Tesla:-0.8@60+120;Apple:0.5@0+30'; raise ConfigError if malformed."""
    drifts: list[Drift] = []
    for part in (script or "").split(";"):
        if not part.strip():
            continue
        m = _DRIFT.match(part)
        if not m:
            raise ConfigError(f"MOCK_DRIFT part {part!r} is not keyword:bias@start_s+duration_s "
                              "(e.g. 'Tesla:-0.8@60+120')")
        bias = float(m["bias"])
        if not -1 <= bias <= 1:
            raise ConfigError(f"MOCK_DRIFT bias {bias} for {m['kw']!r} must be within [-1, 1]")
        drifts.append(Drift(m["kw"], bias, float(m["start"]), float(m["dur"])))
    return drifts


def mix_for(keyword: str, elapsed_s: float, drifts: Sequence[Drift]) -> dict[Label, float]:
    """The label mix for `keyword` at `elapsed_s`: the base mix, shifted by any active drift."""
    mix = dict(BASE_MIX)
    for drift in drifts:
        if drift.keyword.lower() != keyword.lower() or not drift.active(elapsed_s):
            continue
        target: Label = "negative" if drift.bias < 0 else "positive"
        moved = abs(drift.bias) * (1 - mix[target])
        others = [label for label in mix if label != target]
        rest = sum(mix[o] for o in others) or 1.0
        for other in others:
            mix[other] -= moved * mix[other] / rest
        mix[target] += moved
    return mix


class MockGenerator:
    """Synthetic tweets; `clock` gives the seconds since start that drifts are scheduled on."""

    def __init__(self, settings: Settings, *, rng: random.Random | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.drifts = parse_drift(settings.mock_drift)
        self.rng = rng or random.Random()
        started = time.monotonic()
        self.clock = clock or (lambda: time.monotonic() - started)
        self._seq = itertools.count()
        self._run = f"{time.time_ns():x}"

    def tweet(self, keyword: str) -> RawTweet:
        rng = self.rng
        mix = mix_for(keyword, self.clock(), self.drifts)
        label: Label = rng.choices(list(mix), weights=list(mix.values()))[0]
        tag = re.sub(r"\W+", "", keyword) or "brand"
        text = (rng.choice(_OPENERS) + rng.choice(_TEMPLATES[label]).format(kw=keyword)
                + rng.choice(_TAILS).format(tag=tag))
        return RawTweet(id=f"mock-{self._run}-{next(self._seq)}", text=text, created_at=datetime.now(UTC),
                        keyword=keyword, lang="en", source="mock")

    def batch(self, keywords: Sequence[str], n: int) -> list[RawTweet]:
        return [self.tweet(self.rng.choice(list(keywords))) for _ in range(n)] if keywords else []


def fallback_generator(settings: Settings) -> Callable[[list[str], int], Sequence[RawTweet]]:
    """(keywords, n) -> n mock tweets: what the x producer fills in with when X_FALLBACK_TO_MOCK=true."""
    return MockGenerator(settings).batch


def mock_tweets(settings: Settings, keywords: TrackedKeywords, stop: threading.Event, *,
                generator: MockGenerator | None = None, limit: int | None = None) -> Iterator[RawTweet]:
    """Tweets at MOCK_RATE per second (all keywords together) until `stop` (or `limit` tweets)."""
    gen = generator or MockGenerator(settings)
    interval = 1.0 / settings.mock_rate
    next_at = time.monotonic()
    produced = 0
    while not stop.is_set() and (limit is None or produced < limit):
        wait = next_at - time.monotonic()
        if wait > 0 and stop.wait(wait):
            return
        next_at = max(next_at + interval, time.monotonic() - 1.0)  # no burst after a long pause
        current = keywords.current()
        if not current:
            continue
        yield gen.tweet(gen.rng.choice(current))
        produced += 1


def run_mock_producer(settings: Settings, *, bus: Bus, db: Database | None, stop: threading.Event,
                      keywords: list[str] | None = None, limit: int | None = None) -> int:
    """Entry point for `produce --source mock`: runs until `stop` is set (or `limit` tweets)."""
    tracked = TrackedKeywords(settings, db, fixed=keywords)
    gen = MockGenerator(settings)
    logger.info("mock producer: %.1f tweets/s for %s%s", settings.mock_rate, ", ".join(tracked.current()),
                f", drift {settings.mock_drift}" if gen.drifts else "")
    return publish_all(settings, bus=bus, db=db, stop=stop, stage=STAGE,
                       tweets=mock_tweets(settings, tracked, stop, generator=gen, limit=limit),
                       details=lambda: {"source": "mock", "keywords": tracked.current()})
