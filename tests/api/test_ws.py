"""WebSocket feeds against a live uvicorn server over real PostgreSQL (LISTEN/NOTIFY notifier)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import os
import socket
import struct
import time
from datetime import UTC, datetime

import pytest
from websockets.asyncio.client import connect

from tests.api.conftest import api_settings
from tests.api.live import live_server, wait_for

_ids = itertools.count(1)


@pytest.fixture(scope="module")
def airline_sample(airline_csv):
    from tests.api.live import read_airline_csv, score

    return score(read_airline_csv(airline_csv, limit=3000))


def fresh(sample, n: int, *, keyword: str | None = None):
    """`n` real airline tweets re-stamped to now with new ids, as a live replay would store them."""
    now = datetime.now(UTC)
    out = []
    for t in itertools.islice(itertools.cycle(sample), n):
        out.append(
            t.model_copy(
                update={
                    "id": f"ws-{os.getpid()}-{next(_ids)}",
                    "created_at": now,
                    "keyword": keyword or t.keyword,
                }
            )
        )
    return out


@pytest.fixture
def ws_server(pg_url):
    with live_server(api_settings(pg_url)) as srv:
        wait_for(lambda: srv.state.notifier is not None and srv.state.notifier.listening, 10)
        yield srv


async def write(server, tweets) -> float:
    from db.writes import write_tweets

    await asyncio.to_thread(write_tweets, server.state.db, tweets)
    return time.time()  # just after COMMIT


async def collect(ws, until: float) -> list[tuple[float, dict]]:
    """Every tweet received before `until` (time.time()), with its arrival time."""
    got = []
    while (left := until - time.time()) > 0:
        try:
            raw = await asyncio.wait_for(ws.recv(), left)
        except TimeoutError:
            break
        frame = json.loads(raw)
        if frame["type"] == "tweets":
            now = time.time()
            got.extend((now, item) for item in frame["data"])
    return got


def test_subscriber_receives_a_new_tweet_exactly_once_within_a_second(ws_server, airline_sample):
    async def scenario():
        async with connect(f"{ws_server.ws_url}/ws/tweets") as ws:
            hello = json.loads(await ws.recv())
            assert hello["type"] == "hello" and hello["channel"] == "tweets"
            [tweet] = fresh(airline_sample, 1)
            committed = await write(ws_server, [tweet])
            got = await collect(ws, time.time() + 2.5)  # long enough to see a duplicate
            assert [item["id"] for _, item in got] == [tweet.id]
            arrived, item = got[0]
            assert arrived - committed < 1.0
            assert (
                item["text"] == tweet.text
                and item["label"] == tweet.label
                and item["seq"] > hello["last_seq"]
            )

    asyncio.run(scenario())


def test_keyword_filter(ws_server, airline_sample):
    async def scenario():
        async with (
            connect(f"{ws_server.ws_url}/ws/tweets?keyword=delta") as only,
            connect(f"{ws_server.ws_url}/ws/tweets") as every,
        ):
            await only.recv(), await every.recv()
            tweets = fresh(airline_sample, 3, keyword="United") + fresh(airline_sample, 2, keyword="Delta")
            await write(ws_server, tweets)
            a, b = await asyncio.gather(collect(only, time.time() + 1.5), collect(every, time.time() + 1.5))
            assert sorted(i["id"] for _, i in a) == sorted(t.id for t in tweets if t.keyword == "Delta")
            assert sorted(i["id"] for _, i in b) == sorted(t.id for t in tweets)

    asyncio.run(scenario())


def raw_ws(port: int, path: str, *, rcvbuf: int | None = None) -> socket.socket:
    """A WebSocket handshake over a bare socket that then never reads (or vanishes) at will."""
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def test_hundred_clients_and_one_that_never_reads(pg_url, airline_sample, monkeypatch):
    import api.routes.ws as ws_routes

    monkeypatch.setattr(ws_routes, "SEND_TIMEOUT_SECONDS", 3.0)
    # A queue deep enough that readers slowed by a busy test machine lose nothing; the stuck client
    # still fills its socket buffers, its send blocks, and it is cut off after SEND_TIMEOUT_SECONDS.
    settings = api_settings(pg_url, ws_queue_size=1000, ws_batch_ms=100)
    batches, per_batch = 20, 50
    with live_server(settings, sndbuf=128 * 1024) as srv:
        wait_for(lambda: srv.state.notifier is not None and srv.state.notifier.listening, 10)
        stuck = raw_ws(srv.port, "/ws/tweets", rcvbuf=4096)
        try:

            async def scenario():
                clients = [await connect(f"{srv.ws_url}/ws/tweets", max_queue=None) for _ in range(100)]
                for c in clients:
                    assert json.loads(await c.recv())["type"] == "hello"
                assert len(srv.state.notifier.subscribers) == 101
                readers = [asyncio.create_task(collect(c, time.time() + batches * 0.25 + 6)) for c in clients]
                commits: dict[str, float] = {}
                for _ in range(batches):
                    # Long texts (real tweets, repeated) so the stuck socket's buffers really fill.
                    tweets = [
                        t.model_copy(update={"text": (t.text + " ") * 4})
                        for t in fresh(airline_sample, per_batch)
                    ]
                    done = await write(srv, tweets)
                    commits.update({t.id: done for t in tweets})
                    await asyncio.sleep(0.25)
                results = await asyncio.gather(*readers)
                for c in clients:
                    await c.close()
                return commits, results

            commits, results = asyncio.run(scenario())
            lags = []
            for got in results:
                ids = [item["id"] for _, item in got]
                assert len(ids) == len(set(ids)) == batches * per_batch  # every message, once
                assert set(ids) == set(commits)
                lags.extend(arrived - commits[item["id"]] for arrived, item in got)
            lags.sort()
            p95 = lags[int(0.95 * len(lags))]
            logging.getLogger(__name__).info(
                "100-client push lag p50=%.3fs p95=%.3fs max=%.3fs", lags[len(lags) // 2], p95, lags[-1]
            )
            assert p95 < 1.0, f"push lag p95 {p95:.2f}s"
            assert lags[-1] < 3.0
            # The stuck client hit back-pressure (its send blocked) and was disconnected, alone.
            slow = srv.state.metrics.ws_disconnects.labels(channel="tweets")._value.get()
            assert slow == 1
            wait_for(lambda: len(srv.state.notifier.subscribers) == 0, 10)
        finally:
            stuck.close()


def test_client_gone_without_close_frame_leaves_the_registry_quietly(ws_server, airline_sample, caplog):
    caplog.set_level(logging.WARNING)
    s = raw_ws(ws_server.port, "/ws/tweets")
    wait_for(lambda: len(ws_server.state.notifier.subscribers) == 1, 5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST, no close frame
    asyncio.run(write(ws_server, fresh(airline_sample, 3)))
    wait_for(lambda: len(ws_server.state.notifier.subscribers) == 0, 5)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def test_idle_socket_gets_pings(pg_url):
    with live_server(api_settings(pg_url, ws_ping_seconds=0.3)) as srv:

        async def scenario():
            async with connect(f"{srv.ws_url}/ws/tweets") as ws:
                await ws.recv()
                frames = [json.loads(await asyncio.wait_for(ws.recv(), 2)) for _ in range(2)]
                assert frames == [{"type": "ping"}, {"type": "ping"}]
                await ws.ping()  # protocol-level ping answered too

        asyncio.run(scenario())


def test_sentiment_feed_pushes_current_minute_on_change(ws_server, airline_sample):
    async def scenario():
        async with connect(f"{ws_server.ws_url}/ws/sentiment?keyword=united") as ws:
            first = json.loads(await ws.recv())
            assert first["type"] == "sentiment" and first["keyword"] == "united"
            before = sum(row["n"] for row in first["data"])
            tweets = fresh(airline_sample, 7, keyword="United") + fresh(airline_sample, 4, keyword="Delta")
            t0 = time.time()
            await write(ws_server, tweets)
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 3))
                total = sum(row["n"] for row in frame["data"])
                if total != before:
                    break
            assert time.time() - t0 < 0.5 + 1.5  # interval + slack
            assert {row["keyword"] for row in frame["data"]} == {"United"}
            assert total - before == 7
            row = frame["data"][0]
            assert row["n_neg"] + row["n_neu"] + row["n_pos"] == row["n"]
            # The same timestamp serialisation as REST: UTC with "Z", not "+00:00".
            assert row["bucket"].endswith("Z") and "+00:00" not in row["bucket"]
            # No change, no push (within a few intervals).
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 1.2)

    asyncio.run(scenario())


def test_bad_keyword_closes_with_policy_code(ws_server):
    async def scenario():
        async with connect(f"{ws_server.ws_url}/ws/tweets?keyword=" + "x" * 300) as ws:
            await ws.recv()

    from websockets.exceptions import ConnectionClosed

    # Accepted, then closed with the documented code and a reason (not a bare HTTP 403 handshake).
    with pytest.raises(ConnectionClosed) as info:
        asyncio.run(scenario())
    assert info.value.rcvd.code == 1008
    assert info.value.rcvd.reason == "keyword: is longer than 200 characters"


@pytest.mark.parametrize("channel", ["tweets", "sentiment"])
def test_empty_keyword_closes_with_policy_code(ws_server, channel):
    from websockets.exceptions import ConnectionClosed

    async def scenario(query):
        async with connect(f"{ws_server.ws_url}/ws/{channel}{query}") as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 5))

    for query in ("?keyword=", "?keyword=%20%20"):
        with pytest.raises(ConnectionClosed) as info:
            asyncio.run(scenario(query))
        assert info.value.rcvd.code == 1008
        assert info.value.rcvd.reason == "keyword: is empty (leave the parameter out for every keyword)"
    first = asyncio.run(scenario(""))  # no parameter: every keyword
    assert first["type"] == ("hello" if channel == "tweets" else "sentiment")
    assert first["keyword"] is None


def test_ws_timestamps_serialise_like_rest():
    from api.notifier import encode
    from api.schemas import TrendPointPublic

    at = datetime(2015, 2, 24, 10, 0, 1, 250000, tzinfo=UTC)
    point = TrendPointPublic(bucket=at, n=1, n_neg=0, n_neu=1, n_pos=0, avg_score=0.0)
    rest = json.loads(point.model_dump_json())
    ws = json.loads(encode({"bucket": at, "naive": at.replace(tzinfo=None)}))
    assert ws["bucket"] == rest["bucket"] == "2015-02-24T10:00:01.250000Z"
    assert ws["naive"] == rest["bucket"]


def test_hello_fields_are_the_documented_ones(ws_server):
    from tests.api.live import ROOT

    async def scenario():
        async with connect(f"{ws_server.ws_url}/ws/tweets?keyword=United") as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 5))

    hello = asyncio.run(scenario())
    assert set(hello) == {"type", "channel", "keyword", "last_seq"}
    assert (hello["type"], hello["channel"], hello["keyword"]) == ("hello", "tweets", "United")
    doc = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert '{"type":"hello","channel":"tweets","keyword":K,"last_seq":N}' in doc
