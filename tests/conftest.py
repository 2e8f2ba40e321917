"""Shared test setup. Fixture modules under tests/fixtures/ are loaded as plugins."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in (Path(__file__).parent / "fixtures").glob("*.py")
    if p.stem != "__init__"
)

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def make_settings():
    """Settings built from explicit values only (no .env), with test-friendly short intervals."""
    from pipeline.settings import Settings

    def build(**overrides):
        defaults = dict(
            sentiment_engine="vader",
            heartbeat_interval_seconds=0.5,
            batch_wait_ms=50,
            ingest_batch_wait_ms=50,
            alert_check_interval_seconds=0.5,
            kafka_session_timeout_ms=2000,  # tansu holds JoinGroup ~session_timeout/2
            kafka_heartbeat_interval_ms=500,
            kafka_enable_idempotence=False,  # tansu loses acked records to it on a restart
        )
        defaults.update(overrides)
        return Settings(_env_file=None, **defaults)

    return build


@pytest.fixture(scope="session")
def airline_csv() -> Path:
    path = SHARED_DATA / "airline_tweets.csv"
    if not path.exists():
        pytest.skip(f"real tweet data not found at {path} (../shared/data is absent)")
    return path


@pytest.fixture(scope="session")
def tweeteval_jsonl() -> Path:
    path = SHARED_DATA / "tweeteval_val.jsonl"
    if not path.exists():
        pytest.skip(f"real tweet data not found at {path} (../shared/data is absent)")
    return path
