"""One Settings object, read from the environment and .env."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Every knob Batchgate has. Names are the environment variable names."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    host: str = "0.0.0.0"
    port: int = 4000
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    database_url: str = "sqlite+aiosqlite:///./data/batchgate.db"

    default_backend: Literal["local"] = "local"
    local_base_url: str = "http://localhost:11434/v1"
    local_api_key: str | None = None
    local_concurrency: int = Field(4, ge=1, le=1024)
    local_timeout_seconds: float = Field(120.0, gt=0)
    local_batch_max_age_seconds: float = Field(2.0, ge=0)
    local_max_retries: int = Field(3, ge=0, le=10)
    local_retry_backoff_seconds: float = Field(0.5, ge=0)

    batch_max_requests: int = Field(50_000, ge=1)
    batch_max_bytes: int = Field(100 * MiB, ge=1)
    api_max_body_bytes: int = Field(10 * MiB, ge=1024)

    webhook_secret: str | None = None
    webhook_timeout_seconds: float = Field(15.0, gt=0)
    webhook_block_private_networks: bool = False
    delivery_max_attempts: int = Field(8, ge=1, le=100)
    delivery_backoff_base_seconds: float = Field(2.0, ge=0)
    delivery_backoff_max_seconds: float = Field(3600.0, ge=0)
    delivery_concurrency: int = Field(64, ge=1)

    rabbitmq_url: str | None = None
    rabbitmq_input_queue: str = Field("batchgate.requests", max_length=250)
    rabbitmq_prefetch: int = Field(64, ge=1, le=65535)
    rabbitmq_intake_concurrency: int = Field(16, ge=1, le=65535)
    rabbitmq_declare_queues: bool = True
    rabbitmq_publish_timeout_seconds: float = Field(10.0, gt=0)
    rabbitmq_requeue_delay_seconds: float = Field(5.0, ge=0)
    rabbitmq_reconnect_max_seconds: float = Field(30.0, ge=1)

    tick_seconds: float = Field(1.0, gt=0)
    lease_seconds: float = Field(60.0, gt=0)
    scheduler_enabled: bool = True

    @field_validator("webhook_secret", "local_api_key", "rabbitmq_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("webhook_secret")
    @classmethod
    def _secret_shape(cls, value: str | None) -> str | None:
        if value is not None:
            from standardwebhooks.webhooks import Webhook

            try:
                Webhook(value)
            except Exception as exc:
                raise ValueError("WEBHOOK_SECRET must be base64, optionally prefixed with 'whsec_'") from exc
        return value

    def backend_max_age_seconds(self, backend: str) -> float:
        """How long the oldest pending request of a backend may wait before its batch closes."""
        return self.local_batch_max_age_seconds
