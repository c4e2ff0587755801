"""The one typed settings object.

Values come from ``COHORTFLOW_``-prefixed environment variables (nested sections use ``__``, e.g.
``COHORTFLOW_PLATFORM__RATE_LIMIT_PER_HOUR``) and from an optional ``.env`` file. The documented flat
names ``COHORTFLOW_PLATFORM_DATABASE_URL`` and ``COHORTFLOW_SYNC_STATE_URL`` are accepted as aliases because
the issues and the README name them that way.

Secrets, when a section has one, are :class:`pydantic.SecretStr`, so printing a settings object never shows them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class PlatformSettings(BaseModel):
    """The engagement platform (Braze role)."""

    database_url: str = Field(
        default_factory=lambda: f"sqlite:///{Path.cwd() / 'cohortflow-platform.db'}",
        description="SQLAlchemy URL of the platform database (SQLite or PostgreSQL).",
    )
    public_base_url: str = Field(
        default="http://127.0.0.1:8480",
        description="The REST endpoint shown to users (what Braze calls the workspace's REST endpoint).",
    )
    host: str = "127.0.0.1"
    port: int = 8480
    rate_limit_per_hour: int = Field(
        default=250_000, ge=1, description="Partner cohort import requests per partner per hour."
    )
    rate_limit_storage_uri: str = Field(
        default="database",
        description=(
            "Where the rate limiter counts: 'database' (the platform database, one budget for every server "
            "process), memory:// (per process) or another limits library URI such as redis://host:port."
        ),
    )
    cohort_lock_wait_seconds: float = Field(
        default=10.0, gt=0, description="How long an import waits for another import into the same cohort."
    )
    max_body_bytes: int = Field(default=4 * 1024 * 1024, description="Braze rejects payloads over 4 MB.")
    audit_retention_days: int = Field(default=90, ge=1)
    audit_unmatched_sample_size: int = Field(default=20, ge=0)
    db_pool_size: int = Field(default=10, ge=1)


class MessagingSettings(BaseModel):
    """Channels that deliver campaign and Canvas messages (SMTP for email, HTTP for webhooks)."""

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_starttls: bool = Field(default=False, description="Upgrade the SMTP connection with STARTTLS.")
    smtp_ssl: bool = Field(default=False, description="Implicit TLS from the first byte (port 465 style).")
    smtp_ca_file: Path | None = Field(default=None, description="CA bundle to verify the SMTP server against.")
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    delivery_max_attempts: int = Field(default=3, ge=1, le=20, description="Tries per message on transient errors.")
    delivery_retry_initial_seconds: float = Field(default=0.5, ge=0)
    send_lease_seconds: float = Field(
        default=60.0, gt=0, description="A send whose process stops renewing its lease for this long is resumable."
    )
    worker_poll_seconds: float = Field(default=5.0, gt=0)
    smtp_connections: int = Field(default=8, ge=1, le=100, description="SMTP sessions a worker sends email over.")
    webhook_connections: int = Field(default=64, ge=1, le=1000, description="Webhook requests in flight per worker.")
    delivery_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Messages a worker claims (and records) per transaction."
    )
    worker_in_process: bool = Field(
        default=False,
        description="The API server runs the messaging worker in its process(es); `platform serve` sets it "
        "unless given --no-worker.",
    )


class SyncSettings(BaseModel):
    """The sync tool (Hightouch role)."""

    state_url: str = Field(
        default_factory=lambda: f"sqlite:///{Path.cwd() / 'cohortflow-sync-state.db'}",
        description="SQLAlchemy URL of the sync state database.",
    )
    config_path: Path = Field(default=Path("cohortflow.yaml"))
    host: str = Field(default="127.0.0.1", description="Where `cohortflow sync serve` listens.")
    port: int = Field(default=8490, ge=1, le=65535)
    public_base_url: str = Field(
        default="http://127.0.0.1:8490", description="The service's address as links in alerts show it."
    )
    max_concurrent_runs: int = Field(
        default=4, ge=1, le=256, description="Runs at once across every `sync serve` process on the state database."
    )
    poll_seconds: float = Field(
        default=1.0, gt=0, le=60, description="How often `sync serve` looks for due and queued runs."
    )
    debugger_samples_per_run: int = Field(
        default=200, ge=0, le=10_000, description="Requests the debugger keeps per run (failures: twice as many)."
    )
    # Alerts by e-mail.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    alert_from: str = Field(default="cohortflow <cohortflow@localhost>", description="From: of alert e-mails.")
    alert_webhook_timeout_seconds: float = Field(default=10.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="COHORTFLOW_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    log_level: str = "INFO"
    log_json: bool = False
    platform: PlatformSettings = Field(default_factory=PlatformSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    messaging: MessagingSettings = Field(default_factory=MessagingSettings)

    # Flat aliases for the names the docs use; folded into the sections in ``model_post_init``.
    platform_database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("COHORTFLOW_PLATFORM_DATABASE_URL"), exclude=True
    )
    sync_state_url: str | None = Field(
        default=None, validation_alias=AliasChoices("COHORTFLOW_SYNC_STATE_URL"), exclude=True
    )

    def model_post_init(self, __context: object) -> None:
        if self.platform_database_url:
            self.platform.database_url = self.platform_database_url
        if self.sync_state_url:
            self.sync.state_url = self.sync_state_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once. Tests build their own :class:`Settings` instead."""
    return Settings()
