"""One Settings object, read from the environment and .env."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.ground.backends import BackendSpec, load_file, shorthand
from app.ground.retry_schedule import DEFAULT_RETRY_SCHEDULE, exponential_schedule, parse_waits
from app.ground.sealing import parse_keys as parse_secrets_keys
from app.ground.setting_lists import BACKENDS as BACKENDS
from app.ground.setting_lists import parse_host_ports as parse_host_ports
from app.ground.setting_lists import parse_keys as parse_keys
from app.ground.setting_lists import parse_patterns as parse_patterns
from app.ground.setting_lists import parse_proxies as parse_proxies
from app.ground.setting_lists import parse_routes as parse_routes

MiB = 1024 * 1024
# The name the embedded model (app.backends.embedded) serves under, and the default model with it.
EMBEDDED_MODEL = "gemma-3-270m"
Backend = Literal["local", "openai"]


class Price(BaseModel):
    """Synchronous (non-batch) prices of one model, in US dollars per million tokens."""

    input: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)
    output: float = Field(0.0, ge=0)


class Settings(BaseSettings):
    """Every knob Batchgate has. Names are the environment variable names."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Loopback by default: nothing else on the network reaches a fresh `make run`. The image and
    # the compose file set 0.0.0.0; set API_KEYS (or create keys in the UI) when you do.
    host: str = "127.0.0.1"
    port: int = 4000
    # The event loop and HTTP/1.1 parser uvicorn runs `batchgate serve` with: uvloop and httptools
    # (dependencies; faster, see BENCHMARKS.md), or asyncio and h11 (pure Python). auto: uvloop and
    # httptools when installed, else asyncio and h11.
    server_loop: Literal["auto", "asyncio", "uvloop"] = "uvloop"
    server_http: Literal["auto", "h11", "httptools"] = "httptools"
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # json: one JSON object per line, with batch_id / delivery_id / custom_id where they apply.
    log_format: Literal["plain", "json"] = "plain"
    # Secrets (URLs may hold passwords) are kept out of the settings' repr, and so out of logs.
    database_url: str = Field("sqlite+aiosqlite:///./data/batchgate.db", repr=False)
    # Uploaded and produced files (the /v1/files face) live under DATA_DIR/files.
    data_dir: str = "./data"

    # A TOML file naming any number of backends (docs/backends.md). Unset: the one-backend
    # shorthand below (LOCAL_*, OPENAI_*, DEFAULT_BACKEND, BACKEND_ROUTES) names `local` and `openai`.
    backends_file: str | None = None
    default_backend: Backend = "local"
    backend_routes: str = ""
    # Unset: Batchgate runs the embedded model (app/backends/embedded.py) and the local backend
    # points at it; set: the inference server there (Ollama, LM Studio, vLLM, llama.cpp...).
    local_base_url: str | None = None
    # The model a request without one runs on; the embedded model's name when that is in use.
    local_default_model: str | None = None
    # The embedded server: a GGUF file instead of the packaged gemma3 270M, how often it is
    # restarted in a row before it is given up (and its lines fail), and how long it may load.
    embedded_model_path: str | None = None
    embedded_max_restarts: int = Field(5, ge=0, le=100)
    embedded_restart_backoff_seconds: float = Field(1.0, ge=0)
    embedded_startup_timeout_seconds: float = Field(300.0, gt=0)
    local_api_key: str | None = Field(None, repr=False)
    # Inference calls in flight at once: a fixed number, or auto (app/backends/concurrency.py):
    # found per server between 1 and LOCAL_MAX_CONCURRENCY, growing while latency holds and
    # backing off on 429, 503, timeouts and refused connections.
    local_concurrency: int | Literal["auto"] = "auto"
    local_max_concurrency: int = Field(64, ge=1, le=1024)
    local_timeout_seconds: float = Field(120.0, gt=0)
    local_batch_max_age_seconds: float = Field(
        2.0, ge=0, description="A local batch closes when its oldest request has waited this long."
    )
    local_max_retries: int = Field(3, ge=0, le=10)
    local_retry_backoff_seconds: float = Field(0.5, ge=0)
    # How long lines wait for an inference server that fails every call (0: they fail at once).
    local_outage_max_seconds: float = Field(3600.0, ge=0)

    openai_api_key: str | None = Field(None, repr=False)
    openai_base_url: str = "https://api.openai.com/v1"
    openai_organization: str | None = None
    openai_project: str | None = None
    openai_batch_max_age_seconds: float = Field(
        3600.0, ge=0, description="An OpenAI batch closes when its oldest request has waited this long."
    )
    openai_poll_seconds: float = Field(60.0, gt=0)
    openai_resubmit_max: int = Field(3, ge=0, le=20)
    openai_delete_files: bool = True
    openai_timeout_seconds: float = Field(300.0, gt=0)
    openai_max_retries: int = Field(5, ge=0, le=20)
    openai_retry_backoff_seconds: float = Field(1.0, ge=0)
    openai_token_limit_backoff_seconds: float = Field(300.0, ge=0)
    openai_token_limit_retries: int = Field(5, ge=0, le=10)
    openai_token_limits: dict[str, int] = Field(
        default_factory=dict,
        description='Enqueued-token limit per model prefix, as JSON (longest prefix wins), e.g. {"gpt-4o": '
        "1350000}. Overrides OpenAI's Tier 1 table.",
    )
    openai_token_limit_fallback: int = Field(
        90_000, ge=1, description="Enqueued-token limit of a model in neither table."
    )
    openai_prices: dict[str, Price] = Field(
        default_factory=dict,
        description='Synchronous prices in $ per million tokens by model prefix, as JSON, e.g. {"gpt-4o": '
        '{"input": 2.5, "cached_input": 1.25, "output": 10}}. Used for the estimated saving.',
    )
    openai_batch_discount: float = Field(0.5, ge=0, le=1)
    openai_auth_recheck_seconds: float = Field(300.0, gt=0)

    # Anthropic Message Batches backends (the connection itself is each backend's own config).
    anthropic_poll_seconds: float = Field(60.0, gt=0)
    anthropic_auth_recheck_seconds: float = Field(300.0, gt=0)
    anthropic_prices: dict[str, Price] = Field(
        default_factory=dict,
        description="Anthropic standard prices in $ per million tokens by model prefix, as JSON, e.g. "
        '{"claude-sonnet-4": {"input": 3, "cached_input": 0.3, "output": 15}}. Batches cost '
        "ANTHROPIC_BATCH_DISCOUNT off these.",
    )
    anthropic_batch_discount: float = Field(0.5, ge=0, le=1)

    batch_max_requests: int = Field(
        50_000, ge=1, description="A batch closes when it holds this many requests."
    )
    batch_max_bytes: int = Field(
        100 * MiB, ge=1, description="A batch closes when its JSONL reaches this many bytes."
    )
    api_max_body_bytes: int = Field(10 * MiB, ge=1024)
    # A request body that sends nothing for this long is answered 408 and its connection closed:
    # slow uploads cannot hold connections (and file descriptors) for ever.
    body_idle_seconds: float = Field(30.0, gt=0)
    # Uploads (files, bulk bodies, message batches) read at once, in all and per API key (429).
    uploads_max: int = Field(64, ge=1)
    uploads_per_key: int = Field(8, ge=1)
    # POST /api/requests/bulk: its own body limit and how many requests one body may hold.
    api_bulk_max_body_bytes: int = Field(
        100 * MiB, ge=1024, description="Largest body POST /api/requests/bulk accepts, in bytes."
    )
    api_bulk_max_items: int = Field(
        50_000, ge=1, le=1_000_000, description="Most requests one POST /api/requests/bulk body may hold."
    )
    # full: every answered request is on disk before the answer (survives power loss).
    sqlite_synchronous: Literal["full", "normal"] = "full"

    webhook_secret: str | None = Field(None, repr=False)
    # Where batch.completed / failed / expired / cancelled events go (OpenAI's webhook event shape).
    batch_events_webhook_url: AnyHttpUrl | None = None
    # Signs the events (Standard Webhooks); WEBHOOK_SECRET when unset.
    batch_events_webhook_secret: str | None = Field(None, repr=False)
    webhook_timeout_seconds: float = Field(15.0, gt=0)
    # Fernet key(s) that encrypt stored webhook header values and destination signing secrets
    # (app.ground.sealing); comma-separated, the first encrypts. Empty: stored in plain text.
    secrets_key: str | None = Field(None, repr=False)
    # Loopback and private addresses may be webhook targets (link-local/metadata ones never are).
    webhook_allow_private: bool = True
    # Where else this server answers (comma list of host:port, or a host for every port): the
    # replicas, proxies and load balancers in front of it. Webhooks there are refused, as are
    # HOST:PORT's: Batchgate calling its own API can loop (app.net.own_addresses).
    self_addresses: str = ""
    # Redeliveries of one request by its redeliver action: at most this many, and a minute.
    redeliver_max: int = Field(20, ge=1)
    redeliver_per_minute: int = Field(5, ge=1)
    # The guard's old switch, still honoured so that an upgrade never loosens it.
    webhook_block_private_networks: bool = False
    delivery_retry_schedule: str = Field(
        DEFAULT_RETRY_SCHEDULE,
        description="Waits before each retry, in order (30s, 5m, 2h, 1d); past the last, it repeats.",
    )
    delivery_max_attempts: int = Field(
        8, ge=1, le=100, description="Attempts before a delivery ends as delivery_failed."
    )
    # The exponential backoff before DELIVERY_RETRY_SCHEDULE: still honoured when set and the
    # schedule is not, so that an upgrade keeps a configured policy (see _old_backoff).
    delivery_backoff_base_seconds: float | None = Field(None, ge=0)
    delivery_backoff_max_seconds: float | None = Field(None, ge=0)
    delivery_concurrency: int = Field(64, ge=1)
    # A share of those for one destination (webhook origin, RabbitMQ queue or exchange): one
    # receiver that hangs, or a batch of thousands finishing for one receiver, leaves the rest.
    delivery_destination_concurrency: int = Field(16, ge=1)
    delivery_destination_rate: float = Field(0.0, ge=0)  # a second, per process; 0: no limit
    # The circuit breaker (app.core.destinations.breaker); 0 failures: never opens.
    delivery_breaker_failures: int = Field(10, ge=0)
    delivery_breaker_cooldown_seconds: float = Field(60.0, gt=0)

    rabbitmq_url: str | None = Field(None, repr=False)
    rabbitmq_input_queue: str = Field("batchgate.requests", max_length=250)
    rabbitmq_prefetch: int = Field(64, ge=1, le=65535)
    rabbitmq_intake_concurrency: int = Field(64, ge=1, le=65535)
    rabbitmq_declare_queues: bool = True
    # Where rabbitmq deliveries may go: comma lists of names or fnmatch patterns; empty = anywhere.
    rabbitmq_delivery_queues: str = ""
    rabbitmq_delivery_exchanges: str = ""
    rabbitmq_publish_timeout_seconds: float = Field(10.0, gt=0)
    rabbitmq_requeue_delay_seconds: float = Field(5.0, ge=0)
    rabbitmq_reconnect_max_seconds: float = Field(30.0, ge=1)

    tick_seconds: float = Field(1.0, gt=0)
    lease_seconds: float = Field(60.0, gt=0)
    # What `batchgate serve` runs: api (the API and UI), worker (the pipeline and the RabbitMQ
    # intake, serving only /health and /metrics) or all of it (see ServeRole).
    serve_role: Literal["all", "api", "worker"] = "all"
    # false: no pipeline in this process, whatever its role (kept from before roles existed).
    scheduler_enabled: bool = True
    # Ended batches and requests are purged this long after they end (app.core.retention).
    retention_days: int = Field(30, ge=1, le=36500)

    # Comma-separated keys every /api and /v1 route asks for; empty leaves them open. A secret:
    # kept out of the settings' repr, the settings page and /health.
    api_keys: str | None = Field(None, repr=False)
    # /metrics answers without a key even when keys are required (false: it needs one too).
    metrics_public: bool = True
    # Host header values answered (comma list, `*.example.com` patterns). Empty: the loopback
    # names when HOST is loopback (a DNS-rebinding page cannot reach the UI), else any host.
    allowed_hosts: str = ""
    # Signs the UI's session and CSRF cookies. Empty: a random secret per process, so UI logins
    # end with a restart and do not carry between replicas; set it when running several.
    session_secret: str | None = Field(None, repr=False)
    # A UI login ends after this many minutes without a page asked (and 7 days after it began).
    ui_session_idle_minutes: int = Field(720, ge=1, le=10080)
    # The login form's throttle (per process): after this many wrong keys from one client address,
    # or from all together, within LOGIN_THROTTLE_SECONDS, it answers 429 until the window passes.
    login_failures_per_client: int = Field(10, ge=1)
    login_failures_overall: int = Field(100, ge=1)
    login_throttle_seconds: float = Field(60.0, gt=0)
    # The proxies whose X-Forwarded-For, -Proto, -Host and -Prefix headers are believed
    # (app.web.forwarded): addresses and networks, comma-separated, or `*`. Empty: none, so no
    # client can make result links point at another host or pass for another address.
    forwarded_allow_ips: str = ""
    # Mark the UI's cookies Secure (served over HTTPS, e.g. behind a TLS-terminating proxy).
    ui_cookie_secure: bool = False

    @property
    def serves_http_faces(self) -> bool:
        """Whether this process serves the API, the drop-in faces and the UI."""
        return self.serve_role != "worker"

    @property
    def runs_pipeline(self) -> bool:
        """Whether this process runs the scheduler and the RabbitMQ intake consumer."""
        return self.serve_role != "api"

    @field_validator(
        "webhook_secret",
        "batch_events_webhook_url",
        "batch_events_webhook_secret",
        "local_api_key",
        "local_base_url",
        "local_default_model",
        "embedded_model_path",
        "rabbitmq_url",
        "openai_api_key",
        "openai_organization",
        "openai_project",
        "api_keys",
        "session_secret",
        "secrets_key",
        "backends_file",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("webhook_secret", "batch_events_webhook_secret")
    @classmethod
    def _secret_shape(cls, value: str | None) -> str | None:
        if value is not None:
            from standardwebhooks.webhooks import Webhook

            try:
                Webhook(value)
            except Exception as exc:
                raise ValueError("must be base64, optionally prefixed with 'whsec_'") from exc
        return value

    @field_validator("api_keys")
    @classmethod
    def _keys_shape(cls, value: str | None) -> str | None:
        parse_keys(value)
        return value

    @field_validator("secrets_key")
    @classmethod
    def _secrets_key_shape(cls, value: str | None) -> str | None:
        parse_secrets_keys(value)
        return value

    @field_validator("backend_routes")
    @classmethod
    def _routes_shape(cls, value: str) -> str:
        parse_routes(value)
        return value

    @field_validator("local_concurrency", mode="before")
    @classmethod
    def _concurrency_shape(cls, value: object) -> object:
        """auto, or a whole number from 1 to 1024 (pydantic's own message for a union lists
        every member's failure, which says less than this)."""
        text = str(value).strip().lower() if isinstance(value, str | int) else ""
        if text == "auto":
            return "auto"
        if isinstance(value, bool) or not text.isdigit() or not 1 <= int(text) <= 1024:
            raise ValueError(f"must be auto or a whole number from 1 to 1024, not {value!r}")
        return int(text)

    @field_validator("delivery_retry_schedule")
    @classmethod
    def _schedule_shape(cls, value: str) -> str:
        parse_waits(value)
        return value

    @field_validator("openai_token_limits")
    @classmethod
    def _positive_limits(cls, value: dict[str, int]) -> dict[str, int]:
        if bad := [prefix for prefix, limit in value.items() if limit < 1]:
            raise ValueError(f"token limits must be at least 1 (see {', '.join(bad)})")
        return value

    # The backends BACKENDS_FILE names, read once at start (None: the shorthand is in use).
    _file_backends: tuple[BackendSpec, ...] | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _read_backends_file(self) -> Settings:
        if self.backends_file is not None:
            self._file_backends = load_file(self.backends_file)
        return self

    @property
    def backends(self) -> tuple[BackendSpec, ...]:
        """Every backend requests can run on, in routing order."""
        # The field first: reading a private attribute goes through pydantic's slow __getattr__.
        if self.backends_file is None or self._file_backends is None:
            return self.shorthand_backends()
        return self._file_backends

    def shorthand_backends(self) -> tuple[BackendSpec, BackendSpec]:
        """`local` and `openai` as the LOCAL_* and OPENAI_* variables describe them."""
        # Built once per set of values: intake asks for the backends a few times a request, and
        # building two pydantic models each time was 15% of its CPU time.
        return shorthand(
            self.local_base_url, self.local_api_key, self.local_concurrency, self.local_timeout_seconds,
            self.openai_base_url, self.openai_api_key, self.openai_timeout_seconds, self.openai_poll_seconds,
        )  # fmt: skip

    @property
    def uses_embedded_model(self) -> bool:
        """Whether a backend is the embedded model (an openai-compatible one with no URL)."""
        return any(b.kind == "openai-compatible" and b.base_url is None for b in self.backends)

    @model_validator(mode="after")
    def _embedded_default_model(self) -> Settings:
        if self.local_default_model is None and self.uses_embedded_model:
            self.local_default_model = EMBEDDED_MODEL
        return self

    @model_validator(mode="after")
    def _old_backoff(self) -> Settings:
        old = self.delivery_backoff_base_seconds, self.delivery_backoff_max_seconds
        if any(v is not None for v in old) and "delivery_retry_schedule" not in self.model_fields_set:
            base, cap = old[0] if old[0] is not None else 2.0, old[1] if old[1] is not None else 3600.0
            self.delivery_retry_schedule = exponential_schedule(base, cap, self.delivery_max_attempts)
        return self

    @property
    def retry_waits(self) -> tuple[float, ...]:
        """DELIVERY_RETRY_SCHEDULE in seconds."""
        return parse_waits(self.delivery_retry_schedule)

    @field_validator("self_addresses")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        parse_host_ports(value)  # a ValueError names the entry at startup
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies_shape(cls, value: str) -> str:
        parse_proxies(value)
        return value

    @model_validator(mode="after")
    def _old_private_switch(self) -> Settings:
        if self.webhook_block_private_networks:
            self.webhook_allow_private = False
        return self
