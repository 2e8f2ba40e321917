"""The X producer at the HTTP layer: real tweepy code against a faked api.twitter.com (`responses`),
a real SQLite DB for since_id and heartbeats, and the embedded bus."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from pipeline.bus.memory import MemoryBus
from pipeline.contracts import RawTweet, decode_raw
from pipeline.producers.x import STAGE, XAuthError, XProducer, run_x_producer, since_id_key

SEARCH_URL = "https://api.twitter.com/2/tweets/search/recent"
TOKEN = "test-bearer-token-not-real"


class FakeX:
    """Answers recent-search requests through `handler(params) -> (status, headers, body)`."""

    def __init__(self, handler):
        self.handler = handler
        self.calls: list[dict[str, str]] = []
        self.auth: list[str | None] = []

    def __call__(self, request):
        params = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        self.calls.append(params)
        self.auth.append(request.headers.get("Authorization"))
        result = self.handler(params)
        if isinstance(result, Exception):
            raise result
        status, headers, body = result
        return status, headers, json.dumps(body)

    def keywords_asked(self) -> list[str]:
        return [c["query"] for c in self.calls]


def page(ids, *, next_token=None, keyword="Tesla"):
    data = [
        {"id": str(i), "text": f"{keyword} tweet {i}", "created_at": "2025-05-01T12:00:00.000Z",
         "lang": "en", "author_id": "42", "edit_history_tweet_ids": [str(i)]}
        for i in sorted(ids, reverse=True)
    ]
    meta = {"result_count": len(data)}
    if data:
        meta.update(newest_id=data[0]["id"], oldest_id=data[-1]["id"])
    if next_token:
        meta["next_token"] = next_token
    return {"data": data, "meta": meta} if data else {"meta": meta}


@pytest.fixture
def fake_x():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeX(lambda params: (200, {}, page([])))
        rsps.add_callback(responses.GET, SEARCH_URL, callback=fake, content_type="application/json")
        yield fake


@pytest.fixture
def env(make_settings, sqlite_url):
    from db.database import open_database

    settings = make_settings(database_url=sqlite_url, x_bearer_token=TOKEN, keywords=["Tesla"],
                             x_poll_interval_seconds=0.05, retry_initial_backoff_seconds=1.0,
                             heartbeat_interval_seconds=0.05)
    db = open_database(settings)
    from db.writes import seed_keywords

    seed_keywords(db, ["Tesla"])
    bus = MemoryBus()
    bus.ensure_topics([settings.raw_topic])
    consumer = bus.consumer([settings.raw_topic], group_id="test")
    yield settings, db, bus, consumer
    db.engine.dispose()


def drain(consumer) -> list:
    records = consumer.poll(max_records=10_000, timeout=0.05)
    consumer.commit()
    return records


class FakeClock:
    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def producer_heartbeat(db):
    from db.queries import heartbeats

    rows = [h for h in heartbeats(db) if h.stage == STAGE]
    assert len(rows) == 1, rows
    return rows[0]


def test_paginates_with_next_token_and_persists_since_id(env, fake_x):
    settings, db, bus, consumer = env
    from db.writes import get_state, set_state

    set_state(db, since_id_key("Tesla"), "100")

    def handler(params):
        if "next_token" not in params:
            return 200, {}, page([105, 104], next_token="t2")
        assert params["next_token"] == "t2"
        return 200, {}, page([103, 102])

    fake_x.handler = handler
    result = XProducer(settings, bus=bus, db=db).run_round()

    assert result.sent == 4 and result.requests == 2 and result.pause_reason is None
    assert [c.get("since_id") for c in fake_x.calls] == ["100", "100"]
    first = fake_x.calls[0]
    assert first["query"] == '"Tesla" lang:en -is:retweet'
    assert first["tweet.fields"] == "created_at,lang,author_id"
    assert first["max_results"] == "100"
    assert fake_x.auth == [f"Bearer {TOKEN}"] * 2
    records = drain(consumer)
    tweets = [decode_raw(r.value) for r in records]
    assert sorted(t.id for t in tweets) == ["102", "103", "104", "105"]
    assert [r.key.decode() for r in records] == [t.id for t in tweets]  # key = tweet id
    assert {(t.source, t.keyword, t.lang, t.author_id) for t in tweets} == {("x", "Tesla", "en", "42")}
    assert tweets[0].created_at == datetime(2025, 5, 1, 12, tzinfo=UTC)
    assert get_state(db, since_id_key("tesla")) == "105"


def test_since_id_survives_a_restart_so_nothing_is_resent(env, fake_x):
    settings, db, bus, consumer = env
    from db.writes import get_state

    live = {"ids": [10, 11, 12, 13]}

    def handler(params):
        since = int(params.get("since_id", 0))
        newer = [i for i in live["ids"] if i > since]
        return 200, {}, page(newer[-2:], next_token="older" if len(newer) > 2 else None)

    fake_x.handler = handler
    first = XProducer(settings, bus=bus, db=db).run_round()
    # A keyword seen for the first time fetches one page only (not 7 days of history).
    assert first.requests == 1 and first.sent == 2
    assert get_state(db, since_id_key("Tesla")) == "13"

    live["ids"] += [14, 15]
    restarted = XProducer(settings, bus=bus, db=db)  # a new process: only the DB remembers
    second = restarted.run_round()
    assert fake_x.calls[-1]["since_id"] == "13"
    assert second.sent == 2
    ids = [decode_raw(r.value).id for r in drain(consumer)]
    assert sorted(ids) == ["12", "13", "14", "15"] and len(ids) == len(set(ids))
    assert get_state(db, since_id_key("Tesla")) == "15"


def test_interrupted_sweep_keeps_old_since_id_and_resumes_its_token(env, fake_x):
    settings, db, bus, consumer = env
    from db.writes import get_state, set_state

    set_state(db, since_id_key("Tesla"), "100")
    reset = int(time.time()) + 60
    clock = FakeClock()

    def handler(params):
        if "next_token" not in params:
            return 200, {}, page([103, 102], next_token="t2")
        if clock.now < reset:
            return 429, {"x-rate-limit-reset": str(reset), "x-rate-limit-remaining": "0"}, {
                "title": "Too Many Requests", "detail": "Too Many Requests", "status": 429}
        return 200, {}, page([101])

    fake_x.handler = handler
    producer = XProducer(settings, bus=bus, db=db, clock=clock)
    result = producer.run_round()
    assert result.pause_reason == "rate_limited" and result.sent == 2
    assert get_state(db, since_id_key("Tesla")) == "100"  # not past the page still unfetched

    clock.now = reset + 1
    result = producer.run_round()
    assert result.sent == 1
    assert fake_x.calls[-1]["next_token"] == "t2" and fake_x.calls[-1]["since_id"] == "100"
    assert get_state(db, since_id_key("Tesla")) == "103"
    assert sorted(decode_raw(r.value).id for r in drain(consumer)) == ["101", "102", "103"]


def test_429_pauses_until_reset_records_it_and_resumes(env, fake_x):
    settings, db, bus, consumer = env
    clock = FakeClock()
    reset = int(clock.now) + 120
    state = {"limited": True}

    def handler(params):
        if state["limited"]:
            return 429, {"x-rate-limit-reset": str(reset), "x-rate-limit-limit": "450",
                         "x-rate-limit-remaining": "0"}, {"title": "Too Many Requests", "status": 429}
        return 200, {"x-rate-limit-remaining": "449", "x-rate-limit-reset": str(reset + 900)}, page([7])

    fake_x.handler = handler
    producer = XProducer(settings, bus=bus, db=db, clock=clock)
    result = producer.run_round()
    until = datetime.fromtimestamp(reset, UTC)
    assert result.pause_reason == "rate_limited" and result.paused_until == until
    beat = producer_heartbeat(db)
    assert beat.details["state"] == "rate_limited"
    assert datetime.fromisoformat(beat.details["rate_limited_until"]) == until

    clock.now = reset - 1  # still inside the window: no request at all
    assert producer.run_round().pause_reason == "rate_limited"
    assert len(fake_x.calls) == 1

    state["limited"] = False
    clock.now = reset + 1
    result = producer.run_round()
    assert result.pause_reason is None and result.sent == 1 and len(fake_x.calls) == 2
    beat = producer_heartbeat(db)
    assert beat.details["state"] == "ok" and beat.details["rate_limited_until"] is None
    assert beat.details["rate_limit_remaining"] == 449
    assert [decode_raw(r.value).id for r in drain(consumer)] == ["7"]


def test_remaining_zero_pauses_before_a_429(env, fake_x):
    settings, db, bus, consumer = env
    clock = FakeClock()
    reset = int(clock.now) + 300
    fake_x.handler = lambda params: (200, {"x-rate-limit-remaining": "0",
                                           "x-rate-limit-reset": str(reset)}, page([1]))
    producer = XProducer(settings, bus=bus, db=db, keywords=["Tesla", "Apple"], clock=clock)
    result = producer.run_round()
    # The first keyword's answer said 0 left: the second keyword waits for the reset instead of a 429.
    assert len(fake_x.calls) == 1 and result.sent == 1
    assert result.pause_reason == "rate_limited"
    assert result.paused_until == datetime.fromtimestamp(reset, UTC)


def test_401_is_a_clear_error_naming_the_setting_and_stops(env, fake_x):
    settings, db, bus, consumer = env
    fake_x.handler = lambda params: (401, {}, {"title": "Unauthorized", "type": "about:blank",
                                               "status": 401, "detail": "Unauthorized"})
    stop = threading.Event()
    with pytest.raises(XAuthError) as caught:
        run_x_producer(settings, bus=bus, db=db, stop=stop)
    message = str(caught.value)
    assert "X_BEARER_TOKEN" in message and "401" in message
    assert TOKEN not in message
    assert len(fake_x.calls) == 1  # no retry loop


def test_403_names_the_access_tier(env, fake_x):
    settings, db, bus, consumer = env
    fake_x.handler = lambda params: (403, {}, {
        "title": "Client Forbidden", "reason": "client-not-enrolled", "status": 403,
        "detail": "When authenticating requests to the Twitter API v2 endpoints, you must use keys "
                  "and tokens from a Twitter developer App that is attached to a Project."})
    with pytest.raises(XAuthError, match="access tier of X_BEARER_TOKEN") as caught:
        XProducer(settings, bus=bus, db=db).run_round()
    assert "attached to a Project" in str(caught.value)


def test_missing_token_is_a_clear_error(make_settings, sqlite_url):
    settings = make_settings(database_url=sqlite_url)
    with pytest.raises(XAuthError, match="X_BEARER_TOKEN is not set"):
        XProducer(settings, bus=MemoryBus(), db=None)


def test_network_errors_back_off_then_recover(env, fake_x, caplog):
    settings, db, bus, consumer = env
    clock = FakeClock()
    failures = {"left": 2}

    def handler(params):
        if failures["left"]:
            failures["left"] -= 1
            return requests.ConnectionError("connection refused")
        return 200, {}, page([5])

    fake_x.handler = handler
    producer = XProducer(settings, bus=bus, db=db, clock=clock)
    first = producer.run_round()
    assert first.pause_reason == "unavailable"
    assert (first.paused_until - datetime.fromtimestamp(clock.now, UTC)).total_seconds() == \
        pytest.approx(1.0)
    clock.now += 1.01
    second = producer.run_round()
    assert second.pause_reason == "unavailable"  # backoff doubles
    assert (second.paused_until - datetime.fromtimestamp(clock.now, UTC)).total_seconds() == \
        pytest.approx(2.0)
    assert producer_heartbeat(db).details["retry_at"] is not None
    clock.now += 2.01
    third = producer.run_round()
    assert third.pause_reason is None and third.sent == 1
    assert [decode_raw(r.value).id for r in drain(consumer)] == ["5"]
    attempts = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(attempts) == 2 and "attempt 2" in attempts[1]


def test_keywords_added_at_run_time_are_polled_without_restart(env, fake_x):
    settings, db, bus, consumer = env
    from db.writes import add_keyword

    producer = XProducer(settings, bus=bus, db=db)
    producer.run_round()
    assert fake_x.keywords_asked() == ['"Tesla" lang:en -is:retweet']
    add_keyword(db, "Apple")
    add_keyword(db, "TESLA")  # case-insensitive: not a second Tesla
    fake_x.calls.clear()
    fake_x.handler = lambda params: (200, {}, page([9], keyword="Apple"))
    producer.run_round()
    assert sorted(fake_x.keywords_asked()) == ['"Apple" lang:en -is:retweet', '"Tesla" lang:en -is:retweet']


def test_tweet_without_text_goes_on_to_be_dead_lettered(env, fake_x):
    settings, db, bus, consumer = env
    body = page([3, 4])
    del body["data"][0]["text"]
    fake_x.handler = lambda params: (200, {}, body)
    XProducer(settings, bus=bus, db=db).run_round()
    records = drain(consumer)
    assert len(records) == 2
    from pipeline.errors import InvalidMessage

    with pytest.raises(InvalidMessage, match="text"):
        decode_raw(records[0].value)
    assert decode_raw(records[1].value).id == "3"


class RecordingBus(MemoryBus):
    """The embedded bus, noting whether the producer was flushed and closed."""

    def __init__(self):
        super().__init__()
        self.flushed = self.closed = 0

    def producer(self):
        inner = super().producer()
        outer = self

        class Recording:
            def send(self, topic, *, key, value):
                inner.send(topic, key=key, value=value)

            def flush(self, timeout=None):
                outer.flushed += 1

            def close(self):
                outer.closed += 1

        return Recording()


def test_fallback_fills_in_mock_tweets_while_rate_limited(env, fake_x):
    settings, db, _, _ = env
    settings = settings.model_copy(update={"mock_rate": 50.0, "x_fallback_to_mock": True})
    bus = RecordingBus()
    bus.ensure_topics([settings.raw_topic])
    consumer = bus.consumer([settings.raw_topic], group_id="test")
    paused_at = time.time()
    reset = int(paused_at) + 3
    asked = []

    def fallback(keywords, n):
        asked.append((list(keywords), n))
        # tagged "x" on purpose: the producer must re-tag fallback tweets as mock
        return [RawTweet(id=f"m{len(asked)}-{i}", text="mock", created_at=datetime.now(UTC),
                         keyword=keywords[0], source="x") for i in range(n)]

    def handler(params):
        if time.time() < reset:
            return 429, {"x-rate-limit-reset": str(reset)}, {"title": "Too Many Requests"}
        return 200, {}, page([] if params.get("since_id") == "77" else [77])

    fake_x.handler = handler
    stop = threading.Event()
    producer = XProducer(settings, bus=bus, db=db, stop=stop, fallback=fallback)
    thread = threading.Thread(target=producer.run, daemon=True)
    thread.start()
    seen: list = []
    deadline = time.time() + 10
    while time.time() < deadline and not any(t.source == "x" for t in seen):
        seen += [decode_raw(r.value) for r in drain(consumer)]
    mock_during_pause = [t for t in seen if t.source == "mock"]
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert [t.id for t in seen if t.source == "x"] == ["77"]
    assert len(mock_during_pause) >= 0.5 * 50 * (reset - paused_at)  # 50/s while paused
    assert all(kw == ["Tesla"] for kw, _ in asked)
    assert bus.flushed >= 1 and bus.closed == 1  # flushed and closed on shutdown
    assert producer.pause_reason is None


def test_default_fallback_is_the_mock_producers_generator(env, fake_x):
    settings, db, bus, consumer = env
    settings = settings.model_copy(update={"x_fallback_to_mock": True})
    clock = FakeClock()
    fake_x.handler = lambda params: (429, {"x-rate-limit-reset": str(int(clock.now) + 60)}, {})
    producer = XProducer(settings, bus=bus, db=db, clock=clock)
    assert producer.fallback is not None
    assert producer.run_round().pause_reason == "rate_limited"
    assert producer_heartbeat(db).details["fallback_active"] is True
    clock.now += 2.0  # 2 s at MOCK_RATE=5/s
    producer._fill_with_mock()
    tweets = [decode_raw(r.value) for r in drain(consumer)]
    assert len(tweets) == 10
    assert {(t.source, t.keyword) for t in tweets} == {("mock", "Tesla")}
    assert all(t.text.strip() for t in tweets)
