"""The X producer: X API v2 recent search (tweepy), one query per tracked keyword, into `raw_tweets`.

How a keyword is polled (a "sweep"):
- The first request of a sweep asks for everything newer than the keyword's `since_id`, which is
  persisted in the DB (`pipeline_state`, key `x.since_id.<keyword lower>`), so a restart does not
  re-send. Results come newest first; `next_token` pages go further back, down to `since_id`.
- Pages are published and flushed (acks=all) before anything is persisted. `since_id` only moves to
  the sweep's newest id once the sweep has no `next_token` left: an interrupted sweep (rate limit,
  network, restart) is fetched again from the old `since_id`, so it may re-send, never lose (the
  ingestor's writes are idempotent). X documents that `next_token` does not expire, so a sweep that
  hits the per-round page cap continues from its token in the next round.
- A keyword seen for the first time (no `since_id`) fetches one page only: recent search reaches
  back 7 days, and paging all of that for a busy brand would burn the whole rate limit.

Rate limits: every response's `x-rate-limit-remaining` / `x-rate-limit-reset` headers are honoured:
requests are spread over what is left of the window, and at 0 remaining the producer pauses until
the reset without waiting for a 429. A 429 pauses until `x-rate-limit-reset` too. While paused the
heartbeat (stage `producer-x`) carries `details.rate_limited_until` (ISO 8601), which the health
command and dashboard show.

Failures: 401/403 raise `XAuthError` naming X_BEARER_TOKEN (and the access tier) and stop: retrying
a bad token only burns time. Network errors and 5xx pause with exponential backoff, one log line per
attempt. With X_FALLBACK_TO_MOCK=true, mock tweets (source="mock", left out of alerts) fill in while
X is rate-limited or unreachable.

Keywords: without an explicit list the producer reads `tracked_keywords` every round, so keywords
added at run time (dashboard, API) are polled without a restart. An explicit list is used as given.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests
import tweepy
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from pipeline.bus.base import Bus, BusProducer
from pipeline.contracts import RawTweet, encode
from pipeline.errors import BusError, ConfigError, StreamPulseError
from pipeline.producers.base import dedupe_keywords
from pipeline.settings import Settings
from pipeline.stage import instance_name

log = logging.getLogger(__name__)

STAGE = "producer-x"
TWEET_FIELDS = ("created_at", "lang", "author_id")
MAX_PAGES_PER_ROUND = 10  # per keyword: bounds one round's share of the rate limit
HTTP_TIMEOUT_SECONDS = 30.0  # tweepy sets none; a hung socket must not hang the producer
NO_RESET_PAUSE_SECONDS = 60.0  # a 429 without x-rate-limit-reset (X always sends it, proxies may not)

# (keywords, how many) -> mock tweets. The seam to the mock producer's generator.
MockFallback = Callable[[list[str], int], Sequence[RawTweet]]


class XAuthError(ConfigError):
    """X rejected the bearer token (401) or its access tier (403): fix the setting, do not retry."""


def since_id_key(keyword: str) -> str:
    return f"x.since_id.{keyword.strip().lower()}"


def build_query(template: str, keyword: str) -> str:
    # str.replace, not str.format: a template may hold other braces, a keyword may hold quotes.
    return template.replace("{keyword}", keyword.replace('"', ""))


@dataclass
class _Sweep:
    """One keyword's pagination in progress; kept in memory across rounds until it completes."""

    since_id: str | None
    first: bool  # no since_id was known: fetch one page only
    next_token: str | None = None
    newest_id: str | None = None


@dataclass
class RoundResult:
    sent: int = 0
    requests: int = 0
    keywords: list[str] = field(default_factory=list)
    paused_until: datetime | None = None
    pause_reason: str | None = None


class _Pause(Exception):
    """Control flow inside this module (rate limit, backoff); never escapes it."""

    def __init__(self, reason: str, until: float, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.until = until
        self.detail = detail


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def _newer(a: str | None, b: str | None) -> str | None:
    """The newer of two tweet ids (ids are time-ordered snowflakes; compare as integers)."""
    if a is None or b is None:
        return a or b
    return a if int(a) >= int(b) else b


def _int_header(headers: Any, name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, TypeError, ValueError):
        return None


def make_client(settings: Settings) -> tweepy.Client:
    """A tweepy v2 client that returns raw `requests` responses (the rate-limit headers live there)."""
    if settings.x_bearer_token is None or not settings.x_bearer_token.get_secret_value().strip():
        raise XAuthError(
            "X_BEARER_TOKEN is not set: the x producer needs an X API v2 bearer token "
            "(developer portal -> your App -> Keys and tokens)"
        )
    # tweepy logs every request's headers, bearer token included, at DEBUG: keep it above that.
    tweepy_log = logging.getLogger("tweepy")
    if tweepy_log.getEffectiveLevel() < logging.INFO:
        tweepy_log.setLevel(logging.INFO)
    client = tweepy.Client(
        bearer_token=settings.x_bearer_token.get_secret_value(),
        wait_on_rate_limit=False,
        return_type=requests.Response,
    )
    send = client.session.request

    def request_with_timeout(method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", HTTP_TIMEOUT_SECONDS)
        return send(method, url, **kwargs)

    client.session.request = request_with_timeout  # type: ignore[method-assign]
    return client


def default_mock_fallback(settings: Settings) -> MockFallback:
    """Mock tweets from the mock producer's generator, re-tagged source="mock" whatever it says."""
    from pipeline.producers import mock

    return mock.fallback_generator(settings)


class XProducer:
    """Polls X for the tracked keywords and publishes RawTweet(source="x"); see the module doc."""

    def __init__(
        self,
        settings: Settings,
        *,
        bus: Bus,
        db: Any,
        stop: threading.Event | None = None,
        keywords: list[str] | None = None,
        client: tweepy.Client | None = None,
        producer: BusProducer | None = None,
        fallback: MockFallback | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.db = db
        self.stop = stop or threading.Event()
        self.fixed_keywords = dedupe_keywords(keywords) if keywords else None
        self.client = client or make_client(settings)
        self.producer = producer or bus.producer()
        self.clock = clock
        self.fallback = fallback
        if self.fallback is None and settings.x_fallback_to_mock:
            self.fallback = default_mock_fallback(settings)
        self.instance = instance_name(STAGE)

        self._sweeps: dict[str, _Sweep] = {}
        self._keywords: list[str] = list(self.fixed_keywords or [])
        self._paused_until: float | None = None
        self._pause_reason: str | None = None
        self._last_error: str | None = None
        self._failures = 0
        self._limit_remaining: int | None = None
        self._limit_reset: float | None = None
        self._last_request_at: float | None = None
        self._sent_since_beat = 0
        self._mock_since_beat = 0
        self._last_beat: float | None = None
        self._mock_credit = 0.0
        self._mock_last: float | None = None
        self.sent_total = 0
        self.mock_total = 0

    # --- state -----------------------------------------------------------------------------
    @property
    def paused_until(self) -> datetime | None:
        if self._paused_until is None:
            return None
        return datetime.fromtimestamp(self._paused_until, UTC)

    @property
    def pause_reason(self) -> str | None:
        return self._pause_reason

    def _pause(self, pause: _Pause) -> None:
        first = self._pause_reason != pause.reason
        self._paused_until, self._pause_reason, self._last_error = pause.until, pause.reason, pause.detail
        log.warning("X producer paused (%s) until %s: %s", pause.reason, _iso(pause.until), pause.detail)
        if first and self.fallback is not None and pause.reason in ("rate_limited", "unavailable"):
            log.warning("X_FALLBACK_TO_MOCK=true: producing mock tweets (source=mock) meanwhile")
            self._mock_last = self.clock()
        self.beat(force=True)

    def _resume(self) -> None:
        if self._pause_reason is not None:
            log.info("X producer resumed after %s", self._pause_reason)
        self._paused_until = self._pause_reason = None
        self._failures = 0
        self._mock_last = None
        self.beat(force=True)

    def details(self) -> dict[str, Any]:
        rate_limited = self._pause_reason == "rate_limited"
        state = self._pause_reason or "ok"
        fallback_active = self.fallback is not None and self._pause_reason in ("rate_limited", "unavailable")
        return {
            "source": "x",
            "state": state,
            "rate_limited_until": _iso(self._paused_until) if rate_limited else None,
            "retry_at": _iso(self._paused_until) if self._pause_reason and not rate_limited else None,
            "rate_limit_remaining": self._limit_remaining,
            "rate_limit_reset": _iso(self._limit_reset),
            "fallback_to_mock": self.fallback is not None,
            "fallback_active": fallback_active,
            "keywords": list(self._keywords),
            "sent_total": self.sent_total,
            "mock_total": self.mock_total,
            "last_error": self._last_error,
        }

    def beat(self, *, force: bool = False) -> None:
        """Upsert this stage's heartbeat every HEARTBEAT_INTERVAL_SECONDS (or now, on a state change)."""
        from db.writes import beat

        now = self.clock()
        if not force and self._last_beat is not None and (
            now - self._last_beat < self.settings.heartbeat_interval_seconds
        ):
            return
        elapsed = None if self._last_beat is None else max(now - self._last_beat, 1e-6)
        rate = None if elapsed is None else (self._sent_since_beat + self._mock_since_beat) / elapsed
        try:
            beat(self.db, stage=STAGE, instance=self.instance, engine=None, rate=rate, lag=None,
                 details=self.details())
        except (StreamPulseError, SQLAlchemyError) as exc:
            log.warning("X producer heartbeat failed (DB unavailable?): %s", exc)
            return
        self._last_beat = now
        self._sent_since_beat = self._mock_since_beat = 0

    # --- keywords --------------------------------------------------------------------------
    def current_keywords(self) -> list[str]:
        if self.fixed_keywords is not None:
            return self.fixed_keywords
        from db.queries import keywords as list_keywords

        try:
            found = dedupe_keywords([k.keyword for k in list_keywords(self.db) if k.tracked])
        except (StreamPulseError, SQLAlchemyError) as exc:
            log.warning("could not read tracked keywords (using the last known list): %s", exc)
            return self._keywords
        if found != self._keywords:
            log.info("X producer tracking %d keyword(s): %s", len(found), ", ".join(found))
        self._keywords = found
        return found

    # --- one round ---------------------------------------------------------------------------
    def run_round(self) -> RoundResult:
        """Poll every tracked keyword once (paginating), publish, persist since_ids. Never sleeps
        long: while paused (rate limit, backoff) it returns at once with the pause in the result."""
        result = RoundResult()
        now = self.clock()
        if self._paused_until is not None and now < self._paused_until:
            result.paused_until, result.pause_reason = self.paused_until, self._pause_reason
            return result
        try:
            result.keywords = self.current_keywords()
            for keyword in result.keywords:
                if self.stop.is_set():
                    break
                self._poll_keyword(keyword, result)
        except _Pause as pause:
            self._pause(pause)
        except (StreamPulseError, SQLAlchemyError) as exc:
            if isinstance(exc, ConfigError):
                raise
            reason = "bus_unavailable" if isinstance(exc, BusError) else "database_unavailable"
            self._pause(self._backoff(reason, f"{type(exc).__name__}: {exc}"))
        self.beat()
        result.paused_until, result.pause_reason = self.paused_until, self._pause_reason
        return result

    def _poll_keyword(self, keyword: str, result: RoundResult) -> None:
        from db.writes import get_state, set_state

        key = since_id_key(keyword)
        sweep = self._sweeps.get(key)
        if sweep is None:
            since_id = get_state(self.db, key)
            sweep = self._sweeps[key] = _Sweep(since_id=since_id, first=since_id is None)
        query = build_query(self.settings.x_query_template, keyword)
        for _page in range(MAX_PAGES_PER_ROUND):
            if self.stop.is_set():
                return
            body = self._search(query, sweep, result)
            if body is None:  # the keyword's query was refused (400): skip it this round
                self._sweeps.pop(key, None)
                return
            tweets = body.get("data") or []
            meta = body.get("meta") or {}
            for item in tweets:
                self._publish(item, keyword)
            self.producer.flush()  # acknowledged before since_id may move past these tweets
            result.sent += len(tweets)
            self.sent_total += len(tweets)
            self._sent_since_beat += len(tweets)
            sweep.newest_id = _newer(sweep.newest_id, meta.get("newest_id"))
            for item in tweets:
                sweep.newest_id = _newer(sweep.newest_id, str(item.get("id") or "") or None)
            sweep.next_token = meta.get("next_token")
            if not sweep.next_token or sweep.first:
                if sweep.newest_id and sweep.newest_id != sweep.since_id:
                    set_state(self.db, key, sweep.newest_id)
                    log.debug("x since_id for %r -> %s", keyword, sweep.newest_id)
                del self._sweeps[key]
                return
            self.beat()
        log.info("X sweep for %r continues next round (page cap %d)", keyword, MAX_PAGES_PER_ROUND)

    def _search(self, query: str, sweep: _Sweep, result: RoundResult) -> dict[str, Any] | None:
        self._pace()
        params: dict[str, Any] = {
            "max_results": self.settings.x_max_results,
            "tweet_fields": list(TWEET_FIELDS),
        }
        if sweep.since_id:
            params["since_id"] = sweep.since_id
        if sweep.next_token:
            params["next_token"] = sweep.next_token
        self._last_request_at = self.clock()
        result.requests += 1
        try:
            response = self.client.search_recent_tweets(query, **params)
        except tweepy.Unauthorized as exc:
            raise XAuthError(
                f"X API answered 401 Unauthorized ({_api_message(exc)}): X_BEARER_TOKEN is wrong, "
                "revoked or not a bearer token; set X_BEARER_TOKEN to the App's bearer token"
            ) from exc
        except tweepy.Forbidden as exc:
            raise XAuthError(
                f"X API answered 403 Forbidden ({_api_message(exc)}): the access tier of X_BEARER_TOKEN "
                "does not allow GET /2/tweets/search/recent (it needs the Basic tier or higher and an "
                "App attached to a Project); upgrade the tier or use another X_BEARER_TOKEN"
            ) from exc
        except tweepy.TooManyRequests as exc:
            self._note_limits(exc.response.headers)
            until = exc.reset_time if exc.reset_time is not None else self.clock() + NO_RESET_PAUSE_SECONDS
            self._limit_remaining = 0
            raise _Pause("rate_limited", float(until), f"429 Too Many Requests ({_api_message(exc)})") \
                from exc
        except tweepy.BadRequest as exc:
            message = _api_message(exc)
            if sweep.since_id and "since_id" in message:
                # since_id older than recent search's 7 days: start the keyword afresh.
                log.warning("X refused since_id %s for %r (%s); starting afresh", sweep.since_id,
                            query, message)
                sweep.since_id, sweep.first, sweep.next_token, sweep.newest_id = None, True, None, None
                return self._search(query, sweep, result)
            log.error("X refused the query %r (400: %s); check X_QUERY_TEMPLATE and the keyword",
                      query, message)
            return None
        except (tweepy.TwitterServerError, requests.RequestException) as exc:
            raise self._backoff("unavailable", f"X API unreachable: {type(exc).__name__}: {exc}") from exc
        except tweepy.HTTPException as exc:
            raise self._backoff("unavailable", f"X API error {exc.response.status_code}: {exc}") from exc
        self._note_limits(response.headers)
        if self._pause_reason is not None:
            self._resume()
        try:
            return response.json()
        except ValueError as exc:
            raise self._backoff("unavailable", f"X API sent a non-JSON body: {exc}") from exc

    def _backoff(self, reason: str, detail: str) -> _Pause:
        self._failures += 1
        delay = min(
            self.settings.retry_initial_backoff_seconds * 2 ** (self._failures - 1),
            self.settings.retry_max_backoff_seconds,
        )
        detail = f"{detail} (attempt {self._failures}, retry in {delay:.1f} s)"
        return _Pause(reason, self.clock() + delay, detail)

    def _note_limits(self, headers: Any) -> None:
        remaining = _int_header(headers, "x-rate-limit-remaining")
        reset = _int_header(headers, "x-rate-limit-reset")
        if remaining is not None:
            self._limit_remaining = remaining
        if reset is not None:
            self._limit_reset = float(reset)

    def _pace(self) -> None:
        """Spread requests over what is left of the rate-limit window; at 0 left, pause to the reset."""
        now = self.clock()
        if self._limit_reset is None or self._limit_remaining is None or now >= self._limit_reset:
            return
        if self._limit_remaining <= 0:
            raise _Pause("rate_limited", self._limit_reset,
                         "x-rate-limit-remaining is 0; waiting for the window to reset")
        if self._last_request_at is None:
            return
        gap = (self._limit_reset - now) / self._limit_remaining
        self._wait_until(self._last_request_at + gap)

    def _publish(self, item: dict[str, Any], keyword: str) -> None:
        data = {
            "id": item.get("id"),
            "text": item.get("text"),
            "created_at": item.get("created_at") or datetime.now(UTC),
            "keyword": keyword,
            "lang": item.get("lang"),
            "source": "x",
            "author_id": item.get("author_id"),
        }
        try:
            tweet = RawTweet.model_validate(data)
        except ValidationError as exc:
            # Send it anyway: the processor dead-letters it with the reason, so nothing is lost silently.
            log.warning("X sent a tweet that is not a valid RawTweet (%s); passing it on to be "
                        "dead-lettered", exc.errors()[0].get("msg"))
            payload = json.dumps(data, default=str).encode("utf-8")
            self.producer.send(self.settings.raw_topic, key=str(item.get("id") or "x-invalid"),
                               value=payload)
            return
        self.producer.send(self.settings.raw_topic, key=tweet.id, value=encode(tweet))

    # --- mock fallback -----------------------------------------------------------------------
    def _fill_with_mock(self) -> None:
        if self.fallback is None or self._pause_reason not in ("rate_limited", "unavailable"):
            return
        now = self.clock()
        if self._mock_last is None:
            self._mock_last = now
            return
        self._mock_credit += (now - self._mock_last) * self.settings.mock_rate
        self._mock_last = now
        n = int(self._mock_credit)
        keywords = self._keywords or self.current_keywords()
        if n <= 0 or not keywords:
            return
        self._mock_credit -= n
        for tweet in self.fallback(keywords, n):
            if tweet.source != "mock":
                tweet = tweet.model_copy(update={"source": "mock"})
            self.producer.send(self.settings.raw_topic, key=tweet.id, value=encode(tweet))
            self.mock_total += 1
            self._mock_since_beat += 1
        self.producer.flush()

    # --- the loop ------------------------------------------------------------------------------
    def _wait_until(self, deadline: float) -> None:
        """Sleep until `deadline` (or stop), beating and filling in mock tweets meanwhile."""
        step = 0.5 if self.fallback is not None else self.settings.heartbeat_interval_seconds
        while not self.stop.is_set():
            left = deadline - self.clock()
            if left <= 0:
                return
            self.stop.wait(min(left, step))
            try:
                self._fill_with_mock()
            except StreamPulseError as exc:
                log.warning("mock fallback could not publish: %s", exc)
            self.beat()

    def run(self) -> None:
        """Poll until `stop` is set, then flush and close. XAuthError (bad token/tier) escapes."""
        self.bus.ensure_topics([self.settings.raw_topic])
        if self.fixed_keywords is None:
            from db.writes import seed_keywords

            seed_keywords(self.db, list(self.settings.keywords))
        log.info("X producer started (poll every %.0f s, fallback to mock: %s)",
                 self.settings.x_poll_interval_seconds, self.fallback is not None)
        try:
            while not self.stop.is_set():
                started = self.clock()
                self.run_round()
                deadline = started + self.settings.x_poll_interval_seconds
                if self._paused_until is not None:
                    deadline = max(deadline, self._paused_until) if self._pause_reason == "rate_limited" \
                        else self._paused_until
                self._wait_until(deadline)
        finally:
            try:
                self.producer.flush()
            finally:
                self.producer.close()
            log.info("X producer stopped: %d tweets from X, %d mock", self.sent_total, self.mock_total)


def _api_message(exc: tweepy.HTTPException) -> str:
    messages = [str(m) for m in exc.api_messages if m]
    status = getattr(exc.response, "status_code", "?")
    return "; ".join(messages) if messages else f"HTTP {status}"


def run_x_producer(
    settings: Settings, *, bus: Bus, db: Any, stop: threading.Event, keywords: list[str] | None = None
) -> None:
    """Entry point for `python -m pipeline produce --source x`: runs until `stop` is set."""
    XProducer(settings, bus=bus, db=db, stop=stop, keywords=keywords).run()
