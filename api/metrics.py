"""Prometheus metrics on a per-app CollectorRegistry (two apps in one process never collide).

Request latency is measured by a pure ASGI middleware (no BaseHTTPMiddleware overhead) and labelled
with the route template (`/alerts/rules/{rule_id}`), never the raw path, so label cardinality stays
bounded. Database-derived gauges are refreshed on each scrape, in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_seconds = Histogram(
            "streampulse_http_request_duration_seconds",
            "HTTP request latency.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tweets_stored = Gauge(
            "streampulse_tweets_stored", "Tweets stored, per keyword.", ["keyword"], registry=r
        )
        self.tweets_stored_total = Gauge(
            "streampulse_tweets_stored_total", "Tweets stored in all.", registry=r
        )
        self.max_seq = Gauge("streampulse_tweets_max_seq", "Highest storage sequence number.", registry=r)
        self.ws_clients = Gauge(
            "streampulse_ws_clients", "Connected WebSocket clients.", ["channel"], registry=r
        )
        self.ws_messages = Counter(
            "streampulse_ws_messages_sent", "WebSocket frames sent.", ["channel"], registry=r
        )
        self.ws_dropped = Counter(
            "streampulse_ws_messages_dropped",
            "Items dropped for slow WebSocket clients.",
            ["channel"],
            registry=r,
        )
        self.ws_disconnects = Counter(
            "streampulse_ws_slow_disconnects",
            "Clients disconnected for not reading.",
            ["channel"],
            registry=r,
        )
        self.notify_rows = Counter(
            "streampulse_notifier_rows", "New rows fetched by the WebSocket notifier.", registry=r
        )
        self.stage_last_seen = Gauge(
            "streampulse_stage_last_heartbeat_timestamp_seconds",
            "Unix time of a stage's last heartbeat.",
            ["stage", "instance"],
            registry=r,
        )
        self.stage_age = Gauge(
            "streampulse_stage_heartbeat_age_seconds",
            "Seconds since a stage's last heartbeat.",
            ["stage", "instance"],
            registry=r,
        )
        self.stage_rate = Gauge(
            "streampulse_stage_rate", "Stage throughput (msg/s).", ["stage", "instance"], registry=r
        )
        self.stage_lag = Gauge(
            "streampulse_stage_lag", "Stage consumer lag (messages).", ["stage", "instance"], registry=r
        )
        self.db_up = Gauge(
            "streampulse_database_up", "1 when the database answered the last scrape.", registry=r
        )

    def observe_db(self, *, keywords: Iterable, heartbeats: Iterable, max_seq: int | None) -> None:
        """Refresh the database-derived gauges from query-layer results (called in a thread)."""
        self.tweets_stored.clear()
        total = 0
        for info in keywords:
            self.tweets_stored.labels(keyword=info.keyword).set(info.n)
            total += info.n
        self.tweets_stored_total.set(total)
        if max_seq is not None:
            self.max_seq.set(max_seq)
        now = datetime.now(UTC)
        for gauge in (self.stage_last_seen, self.stage_age, self.stage_rate, self.stage_lag):
            gauge.clear()
        for hb in heartbeats:
            labels = {"stage": hb.stage, "instance": hb.instance}
            if hb.last_seen is None:
                continue
            self.stage_last_seen.labels(**labels).set(hb.last_seen.timestamp())
            self.stage_age.labels(**labels).set(max(0.0, (now - hb.last_seen).total_seconds()))
            if hb.rate is not None:
                self.stage_rate.labels(**labels).set(hb.rate)
            if hb.lag is not None:
                self.stage_lag.labels(**labels).set(hb.lag)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class LatencyMiddleware:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.request_seconds.labels(
                method=scope.get("method", ""), route=template, status=str(status["code"])
            ).observe(time.perf_counter() - start)
