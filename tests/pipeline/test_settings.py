"""The one settings object: env parsing, comma lists, secrets, validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.settings import Settings


def test_comma_separated_lists_from_env(monkeypatch):
    monkeypatch.setenv("KEYWORDS", " Tesla, United ,,Apple ")
    monkeypatch.setenv("ALERT_EMAIL_TO", "ops@example.com,cto@example.com")
    monkeypatch.setenv("CORS_ORIGINS", "http://localhost:8501")
    s = Settings(_env_file=None)
    assert s.keywords == ["Tesla", "United", "Apple"]
    assert s.alert_email_to == ["ops@example.com", "cto@example.com"]
    assert s.cors_origins == ["http://localhost:8501"]
    # The allow-list defaults to the default recipients.
    assert s.allowed_recipients == ["ops@example.com", "cto@example.com"]


def test_dotenv_file_is_read(tmp_path):
    env = tmp_path / ".env"
    env.write_text("SENTIMENT_ENGINE=vader\nBATCH_SIZE=7\nKAFKA_BOOTSTRAP_SERVERS=\n")
    s = Settings(_env_file=env)
    assert s.sentiment_engine == "vader"
    assert s.batch_size == 7
    assert s.embedded  # an empty value means "unset": the embedded bus


def test_secrets_never_show_in_repr(monkeypatch):
    monkeypatch.setenv("SMTP_PASSWORD", "hunter2-app-password")
    monkeypatch.setenv("API_KEY", "k-123-secret")
    s = Settings(_env_file=None)
    text = repr(s) + str(s) + s.model_dump_json()
    assert "hunter2" not in text and "k-123-secret" not in text
    assert s.smtp_password.get_secret_value() == "hunter2-app-password"


def test_cors_wildcard_is_refused(monkeypatch):
    monkeypatch.setenv("CORS_ORIGINS", "*")
    with pytest.raises(ValidationError, match="CORS_ORIGINS"):
        Settings(_env_file=None)


def test_invalid_engine_is_refused(monkeypatch):
    monkeypatch.setenv("SENTIMENT_ENGINE", "magic")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)


def test_defaults_are_production_values():
    s = Settings(_env_file=None)
    assert s.sentiment_engine == "auto"
    assert s.kafka_session_timeout_ms == 45000  # Apache Kafka's default; tests shorten it
    assert s.max_text_chars == 10_000
    assert (s.raw_topic, s.analyzed_topic) == ("raw_tweets", "analyzed_tweets")
    assert s.database_url.startswith("sqlite:///")
