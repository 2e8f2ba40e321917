"""The one settings object. Read from env vars and an optional `.env` when a process starts.

Nothing here runs at import time: call `get_settings()` from a process's entry point and pass the
object on. List settings (KEYWORDS, ALERT_EMAIL_TO, ...) are comma-separated strings.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: object) -> object:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # --- message bus -------------------------------------------------------------------------
    kafka_bootstrap_servers: str | None = Field(
        None, description="Kafka bootstrap servers (host:port,...). Unset = embedded in-process bus."
    )
    kafka_client_id: str = Field("streampulse", description="Kafka client id prefix.")
    kafka_partitions: int = Field(6, ge=1, description="Partitions for topics the stages create.")
    kafka_replication_factor: int = Field(1, ge=1, description="Replication factor for created topics.")
    kafka_session_timeout_ms: int = Field(
        45000, ge=1000, description="Consumer group session timeout (Apache Kafka default)."
    )
    kafka_heartbeat_interval_ms: int = Field(3000, ge=100, description="Consumer heartbeat interval.")
    kafka_request_timeout_ms: int = Field(30000, ge=1000, description="Client request timeout.")
    kafka_enable_idempotence: bool = Field(
        True, description="Idempotent producer (Kafka's default). Tests against tansu turn it off."
    )
    processor_group_id: str = Field("streampulse-processor", description="Processor consumer group.")
    ingestor_group_id: str = Field("streampulse-ingestor", description="Ingestor consumer group.")
    raw_topic: str = Field("raw_tweets", description="Topic producers publish raw tweets to.")
    analyzed_topic: str = Field("analyzed_tweets", description="Topic the processor publishes to.")
    dead_letter_topic: str = Field("dead_letters", description="Topic for messages that failed.")

    # --- storage -----------------------------------------------------------------------------
    database_url: str = Field(
        "sqlite:///./data/streampulse.db",
        description="SQLAlchemy URL: postgresql+psycopg2://... (TimescaleDB detected) or sqlite:///...",
    )
    timescale_chunk_interval: str = Field("1 day", description="Hypertable chunk interval.")
    timescale_compress_after: str | None = Field(
        "7 days", description="Compress raw chunks older than this (empty = never)."
    )
    timescale_retention: str | None = Field(
        None, description="Drop raw tweets older than this (unset = keep; aggregates stay)."
    )
    timescale_refresh_start_offset: str = Field(
        "3 hours", description="Continuous-aggregate refresh policy window start."
    )
    timescale_refresh_end_offset: str = Field("1 minute", description="Refresh policy window end.")
    timescale_refresh_schedule: str = Field("1 minute", description="Refresh policy interval.")

    # --- tracked keywords --------------------------------------------------------------------
    keywords: CommaList = Field(
        default_factory=lambda: ["Tesla", "United", "Apple"],
        description="Keywords to track (comma-separated); seeds the tracked_keywords table.",
    )

    # --- sentiment ---------------------------------------------------------------------------
    sentiment_engine: Literal["auto", "transformer", "vader"] = Field(
        "auto", description="auto = transformer, falling back to VADER if the model cannot load."
    )
    model_name: str = Field(
        "cardiffnlp/twitter-roberta-base-sentiment-latest",
        description="Hugging Face model id or local directory for the transformer engine.",
    )
    model_device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Device for the model.")
    model_dtype: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="GPU dtype (auto = fp16 on CUDA, fp32 on CPU)."
    )
    model_quantize: Literal["none", "int8"] = Field(
        "none", description="int8 = dynamic quantisation of Linear layers on CPU."
    )
    model_max_length: int = Field(128, ge=8, le=512, description="Token truncation length.")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (unset = torch's).")
    batch_size: int = Field(64, ge=1, description="Processor: max tweets per classification batch.")
    batch_wait_ms: int = Field(200, ge=0, description="Processor: max wait to fill a batch.")
    ingest_batch_size: int = Field(1000, ge=1, description="Ingestor: max rows per DB transaction.")
    ingest_batch_wait_ms: int = Field(250, ge=0, description="Ingestor: max wait to fill a batch.")
    max_text_chars: int = Field(10_000, ge=1, description="Longer texts are dead-lettered.")

    # --- producers ---------------------------------------------------------------------------
    mock_rate: float = Field(5.0, gt=0, description="Mock producer: tweets per second.")
    mock_drift: str | None = Field(
        None,
        description=(
            "Mock sentiment script, e.g. 'Tesla:-0.8@60+120' "
            "(keyword:bias@start_s+duration_s; ';'-separated)."
        ),
    )
    replay_id_column: str = Field("id", description="Replay: id column name.")
    replay_text_column: str = Field("text", description="Replay: text column name.")
    replay_created_at_column: str = Field("created_at", description="Replay: timestamp column.")
    replay_keyword_column: str = Field("keyword", description="Replay: keyword column.")
    replay_label_column: str = Field("label", description="Replay: human label column (gold_label).")
    x_bearer_token: SecretStr | None = Field(None, description="X API v2 bearer token.")
    x_query_template: str = Field(
        '"{keyword}" lang:en -is:retweet', description="X recent-search query; {keyword} is replaced."
    )
    x_poll_interval_seconds: float = Field(
        60.0, gt=0, description="Seconds between search rounds over all keywords."
    )
    x_max_results: int = Field(100, ge=10, le=100, description="Tweets per X search page.")
    x_fallback_to_mock: bool = Field(
        False, description="On X failure, produce mock tweets (tagged source=mock, never alerted on)."
    )

    # --- stage lifecycle ---------------------------------------------------------------------
    heartbeat_interval_seconds: float = Field(5.0, gt=0, description="Stage heartbeat period.")
    throughput_log_seconds: float = Field(30.0, gt=0, description="Throughput log line period.")
    retry_initial_backoff_seconds: float = Field(0.5, gt=0, description="First retry delay.")
    retry_max_backoff_seconds: float = Field(30.0, gt=0, description="Retry delay cap.")
    log_level: str = Field("INFO", description="Logging level.")
    log_json: bool = Field(False, description="Log as JSON lines.")

    # --- API ---------------------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="API bind address.")
    api_port: int = Field(8000, ge=1, le=65535, description="API port.")
    api_key: SecretStr | None = Field(None, description="When set, writes need header X-API-Key.")
    api_read_requires_key: bool = Field(False, description="When true, reads need the key too.")
    cors_origins: CommaList = Field(default_factory=list, description="Allowed CORS origins.")
    ws_batch_ms: int = Field(250, ge=10, description="WebSocket: send batching interval per client.")
    ws_queue_size: int = Field(1000, ge=1, description="WebSocket: per-client queue; full = drop.")
    ws_ping_seconds: float = Field(20.0, gt=0, description="WebSocket: ping idle sockets.")
    ws_sentiment_interval_seconds: float = Field(
        2.0, gt=0, description="WebSocket sentiment: min seconds between pushes."
    )
    notify_poll_seconds: float = Field(0.25, gt=0, description="SQLite: new-row poll interval.")

    # --- dashboard ---------------------------------------------------------------------------
    dashboard_host: str = Field(
        "127.0.0.1", description="Dashboard bind address for `pipeline run` (0.0.0.0 to expose it)."
    )
    dashboard_port: int = Field(8501, ge=1, le=65535, description="Dashboard port.")
    dashboard_password: SecretStr | None = Field(None, description="When set, the dashboard asks for it.")
    dashboard_tz: str | None = Field(None, description="Time zone for the dashboard (default: browser's).")
    dashboard_refresh_seconds: float = Field(5.0, gt=0, description="Live tile refresh interval.")
    dashboard_url: str = Field("http://localhost:8501", description="Dashboard link used in emails.")

    # --- alerts ------------------------------------------------------------------------------
    alerts_enabled: bool = Field(True, description="Run the alert evaluator.")
    alert_check_interval_seconds: float = Field(60.0, gt=0, description="Alert evaluation period.")
    smtp_host: str | None = Field(None, description="SMTP server (unset = alerts recorded, not mailed).")
    smtp_port: int = Field(587, ge=1, le=65535, description="SMTP port.")
    smtp_starttls: bool = Field(True, description="Use STARTTLS.")
    smtp_ssl: bool = Field(False, description="Use implicit TLS (port 465).")
    smtp_user: str | None = Field(None, description="SMTP login.")
    smtp_password: SecretStr | None = Field(None, description="SMTP password (Gmail: an app password).")
    smtp_timeout_seconds: float = Field(10.0, gt=0, description="Timeout for every SMTP connection.")
    smtp_verify_tls: bool = Field(True, description="Verify the SMTP server's TLS certificate.")
    alert_email_from: str = Field("streampulse@localhost", description="From address of alert emails.")
    alert_email_to: CommaList = Field(default_factory=list, description="Default alert recipients.")
    alert_allowed_recipients: CommaList = Field(
        default_factory=list,
        description="Allowed recipients: addresses or @domains (default: the ALERT_EMAIL_TO addresses).",
    )

    @field_validator("keywords", "cors_origins", "alert_email_to", "alert_allowed_recipients", mode="before")
    @classmethod
    def _comma_lists(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator(
        "kafka_bootstrap_servers", "timescale_compress_after", "timescale_retention", "smtp_host",
        "smtp_user", "dashboard_tz", "mock_drift",
        # An empty value (`API_KEY=` in .env, `${API_KEY:-}` in docker-compose.yml) means unset.
        "x_bearer_token", "api_key", "smtp_password", "dashboard_password", "torch_threads",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard(cls, value: list[str]) -> list[str]:
        # Credentials are allowed on CORS requests, so a wildcard would let any site act as the user.
        if "*" in value:
            raise ValueError("CORS_ORIGINS may not contain '*'; list the dashboard's origins")
        return value

    @property
    def embedded(self) -> bool:
        """True when no Kafka is configured and the stages talk over the in-process bus."""
        return not self.kafka_bootstrap_servers

    @property
    def allowed_recipients(self) -> list[str]:
        return [r.lower() for r in (self.alert_allowed_recipients or self.alert_email_to)]


def get_settings(**overrides: object) -> Settings:
    """Build the settings for this process (env, `.env`, then explicit overrides)."""
    return Settings(**overrides)
