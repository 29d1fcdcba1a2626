"""create_app(settings): routes, error handlers, OpenAPI, and the lifespan that runs the worker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from litestar import Litestar, Router
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from app.api.anthropic import ANTHROPIC_ROUTERS
from app.api.batches import BatchController
from app.api.destination_secrets import DestinationSecretController
from app.api.destinations import DestinationController
from app.api.document import SchemaJson
from app.api.errors import EXCEPTION_HANDLERS
from app.api.health import health
from app.api.metrics import metrics_route
from app.api.openai import OPENAI_ROUTERS
from app.api.owners import OwnerController
from app.api.recoveries import RecoveryController
from app.api.request_ids import stamp_request_id
from app.api.requests import RequestController
from app.api.retention import purge
from app.api.subscriptions import SubscriptionController
from app.backends.anthropic_batch import DEFAULT_BASE_URL as ANTHROPIC_URL
from app.backends.anthropic_batch import AnthropicBatchBackend
from app.backends.base import BatchAPI, EmbeddedStatus, LineRunner, MessageBatchAPI
from app.backends.embedded import EmbeddedServer
from app.backends.local import LocalBackend
from app.backends.openai import OpenAIBackend
from app.channels.base import Channel
from app.channels.rabbitmq import RabbitMQChannel
from app.channels.webhook import WebhookChannel
from app.consumers.intake import IntakeConsumer
from app.core import key_store
from app.core.actions import Actions
from app.core.driver.status import StatusBoard
from app.core.driver.worker import Worker
from app.core.rules.access import ApiKeys
from app.core.rules.effective import EffectiveSettings
from app.core.rules.login_throttle import LoginThrottle
from app.core.ui_sessions import UiSessions
from app.db.migrate import pending_revision
from app.db.session import Database
from app.ground.backends import BackendSpec
from app.ground.config import Settings
from app.ground.steps import wake_nothing
from app.net.broker import Broker, BrokerStatus, rabbitmq_status
from app.net.outbound import Adapter, RetryPolicy
from app.ui import ui_router
from app.ui.render import register_filters
from app.web.auth import RequireApiKey
from app.web.bodies import BodyGuard, Uploads
from app.web.forwarded import ForwardedHeaders
from app.web.protection import ScreenRequests, UiCookies, answered_hosts, is_loopback
from app.web.state import AppState

log = logging.getLogger(__name__)

OPEN_TO_THE_NETWORK = (
    "SERVING ON %s WITH NO API KEY: anyone who can reach this port reads every prompt and result "
    "and can change delivery targets. Set API_KEYS, or create a key in the UI (Keys)."
)

STORED_IN_CLEAR = (
    "SECRETS_KEY is not set: webhook header values and destination signing secrets are stored "
    "in plain text (docs/security.md#encryption-at-rest)"
)

AUTOVACUUM_OFF = (
    "PostgreSQL's autovacuum is off: the requests and deliveries tables fill with dead rows "
    "and batching and delivery slow down until VACUUM runs (docs/operations.md#databases)"
)

STATIC = Path(__file__).resolve().parents[1] / "static"
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
# Swagger UI is vendored under static/ (pinned), so the docs work without reaching a CDN.
SWAGGER = SwaggerRenderPlugin(
    path="/swaggerui",
    js_url="/static/swagger-ui/swagger-ui-bundle.js",
    css_url="/static/swagger-ui/swagger-ui.css",
    standalone_preset_js_url="/static/swagger-ui/swagger-ui-standalone-preset.js",
    favicon="",
)


def _register_filters(engine: JinjaTemplateEngine) -> None:
    register_filters(engine.engine)


def api_routers() -> tuple[Router, Router]:
    """The native API and the router its OpenAPI document and Swagger UI are served on: both
    under /api and both behind the key check, so nothing but /health answers without a key.

    Built per app: Litestar adds the document's handlers to the second router it is given.
    """
    native = Router(
        "/api",
        route_handlers=[
            RequestController,
            BatchController,
            DestinationController,
            DestinationSecretController,
            SubscriptionController,
            RecoveryController,
            OwnerController,
            purge,
        ],
        middleware=[RequireApiKey],
    )
    docs = Router("/api", route_handlers=[], middleware=[RequireApiKey], include_in_schema=False)
    return native, docs


@dataclass
class Adapters:
    """The backends (one adapter per named backend, by kind) and channels this process talks
    through, handed to the core. Each is typed as the protocol the core asks for, so the type
    checker proves the adapter fits it."""

    line_runners: list[LineRunner]
    batch_apis: list[BatchAPI]
    message_batch_apis: list[MessageBatchAPI]
    channels: dict[str, Channel]

    def all(self) -> list[Adapter]:
        return [*self.line_runners, *self.batch_apis, *self.message_batch_apis, *self.channels.values()]


def build_adapters(
    settings: Settings, broker: Broker | None, embedded: EmbeddedServer | None = None
) -> Adapters:
    """One adapter per named backend, and the channels."""
    built = Adapters([], [], [], {"webhook": WebhookChannel(settings)})
    for spec in settings.backends:
        if spec.kind == "openai-compatible":
            # The embedded model serves the backend that names no server.
            built.line_runners.append(
                LocalBackend(settings, embedded if spec.base_url is None else None, spec)
            )
        elif spec.kind == "openai-batch":
            built.batch_apis.append(OpenAIBackend(settings, spec))
        elif spec.kind == "anthropic-batch":
            built.message_batch_apis.append(anthropic_backend(settings, spec))
    if broker is not None:
        built.channels["rabbitmq"] = RabbitMQChannel(settings, broker.publish)
    return built


def anthropic_backend(settings: Settings, spec: BackendSpec) -> AnthropicBatchBackend:
    """An anthropic-batch backend from its spec: its own URL, key and timeout; the batch APIs'
    retry policy (OPENAI_MAX_RETRIES, OPENAI_RETRY_BACKOFF_SECONDS)."""
    return AnthropicBatchBackend(
        spec.name,
        spec.api_key,
        spec.base_url or ANTHROPIC_URL,
        timeout_seconds=spec.timeout_seconds or settings.openai_timeout_seconds,
        retries=RetryPolicy(settings.openai_max_retries, settings.openai_retry_backoff_seconds),
    )


def embedded_server(settings: Settings, runs_lines: bool) -> EmbeddedServer | None:
    """The embedded model, when no LOCAL_BASE_URL is set and this process runs local lines (an
    api process, or one with the scheduler off, starts none)."""
    if not (settings.uses_embedded_model and runs_lines):
        return None
    return EmbeddedServer(
        settings.embedded_model_path,
        settings.embedded_max_restarts,
        settings.embedded_restart_backoff_seconds,
        settings.embedded_startup_timeout_seconds,
    )


def _no_model() -> EmbeddedStatus | None:
    return None


@dataclass
class Pipeline:
    """What a process runs beside its HTTP faces, built from its settings: started with the app
    in this order and stopped in the reverse one."""

    broker: Broker | None
    embedded: EmbeddedServer | None
    adapters: Adapters
    worker: Worker | None
    consumer: IntakeConsumer | None

    @classmethod
    def build(cls, settings: Settings, db: Database, effective: EffectiveSettings) -> Pipeline:
        # The broker serves the pipeline (RabbitMQ deliveries) and the intake consumer; an api
        # process runs neither.
        pipeline = settings.runs_pipeline
        broker = Broker(settings) if settings.rabbitmq_url and pipeline else None
        runs_lines = pipeline and settings.scheduler_enabled
        embedded = embedded_server(settings, runs_lines)
        built = build_adapters(settings, broker, embedded)
        worker = (
            Worker(
                db, effective, built.line_runners, built.batch_apis, built.channels, built.message_batch_apis
            )
            if runs_lines
            else None
        )
        if worker and broker:
            # Deliveries that waited out an outage go as soon as the broker is back.
            broker.publish.on_connected.append(worker.wake_deliver)
        consumer = (
            IntakeConsumer(db, effective, broker.intake, broker.intake_queue)
            if broker and broker.intake_queue
            else None
        )
        return cls(broker, embedded, built, worker, consumer)

    def status_board(self) -> StatusBoard:
        """What /health and the dashboard ask for this process's status."""
        broker, consumer, embedded = self.broker, self.consumer, self.embedded

        def rabbitmq() -> BrokerStatus | None:
            return rabbitmq_status(broker, consumer)

        return StatusBoard(self.worker, rabbitmq, embedded.status if embedded else _no_model)

    async def start(self) -> None:
        for starting in (self.broker, self.consumer):
            if starting:
                starting.start()
        if self.worker:
            await self.worker.start()
        if self.embedded:
            self.embedded.start()  # last: nothing between here and `stop` can leave it running

    async def stop(self) -> None:
        try:
            for stopping in (self.consumer, self.worker):
                if stopping:
                    await stopping.stop()
            if self.broker:
                await self.broker.close()
        finally:
            if self.embedded:  # after the worker, so no line is sent to it as it stops
                await self.embedded.stop()
        for adapter in self.adapters.all():
            await adapter.close()


def lifespan_of(settings: Settings) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """Start the database, broker, consumer and scheduler with the app, and stop them after."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if missing := await pending_revision(settings.database_url):
            raise RuntimeError(f"database is not migrated to {missing}: run `batchgate migrate` first")
        db = Database(settings.database_url, settings.sqlite_synchronous)
        effective = EffectiveSettings(db, settings)
        await effective.refresh()
        parts = Pipeline.build(settings, db, effective)
        # The keys are read once, at start, like every setting that is not edited at runtime.
        keys = ApiKeys.of(settings.api_keys)
        await key_store.refresh(db, keys)
        keys_refresh = asyncio.create_task(key_store.keep_fresh(db, keys), name="api-keys-refresh")
        if settings.serves_http_faces and not keys.required and not is_loopback(settings.host):
            log.warning(OPEN_TO_THE_NETWORK, settings.host)
        if settings.secrets_key is None:
            log.info(STORED_IN_CLEAR)
        if await db.autovacuum_off():
            log.warning(AUTOVACUUM_OFF)
        wake = parts.worker.wake if parts.worker else wake_nothing
        AppState(
            db=db,
            effective=effective,
            actions=Actions(db, effective, wake, {api.name: api for api in parts.adapters.batch_apis}),
            status=parts.status_board(),
            api_keys=keys,
            role=settings.serve_role,
            host=settings.host,
            allowed_hosts=answered_hosts(settings),
            ui_sessions=UiSessions(timedelta(minutes=settings.ui_session_idle_minutes)),
            login_throttle=LoginThrottle(
                settings.login_failures_per_client,
                settings.login_failures_overall,
                settings.login_throttle_seconds,
            ),
        ).keep_on(app.state)
        app.state.pipeline = parts  # for tests and benchmarks that look inside; faces ask `status`
        await parts.start()
        try:
            yield
        finally:
            keys_refresh.cancel()
            await parts.stop()
            await db.dispose()

    return lifespan


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the ASGI app for SERVE_ROLE: the API and UI (api), the pipeline with only /health and
    /metrics on HTTP (worker), or both (all). SCHEDULER_ENABLED=false keeps the pipeline off."""
    settings = settings or Settings()
    native, docs = api_routers()
    cookies = UiCookies.of(settings)
    static = create_static_files_router(path="/static", directories=[STATIC], include_in_schema=False)
    faces = (
        [native, *OPENAI_ROUTERS, ui_router(cookies.middleware), *ANTHROPIC_ROUTERS, static]
        if settings.serves_http_faces
        else []
    )
    app = Litestar(
        route_handlers=[health, metrics_route(settings.metrics_public), *faces],
        lifespan=[lifespan_of(settings)],
        middleware=[
            # First: what follows sees the client and scheme a listed proxy forwarded.
            *forwarded_headers(settings),
            DefineMiddleware(BodyGuard, settings=settings, uploads=Uploads()),
            ScreenRequests,
        ],
        # The drop-in faces' request ids (x-request-id, request-id) on every answer they give.
        before_send=[stamp_request_id],
        exception_handlers=EXCEPTION_HANDLERS,
        template_config=TemplateConfig(
            directory=TEMPLATES, engine=JinjaTemplateEngine, engine_callback=_register_filters
        ),
        request_max_body_size=settings.api_max_body_bytes,
        openapi_config=openapi_config(docs) if settings.serves_http_faces else None,
        logging_config=None,
    )
    repair_options_allow(app)
    return app


def forwarded_headers(settings: Settings) -> list[DefineMiddleware]:
    """The proxies' X-Forwarded-* reading, when FORWARDED_ALLOW_IPS lists any (none costs nothing)."""
    if not settings.forwarded_allow_ips.strip():
        return []
    return [DefineMiddleware(ForwardedHeaders, allow_ips=settings.forwarded_allow_ips)]


def repair_options_allow(app: Litestar) -> None:
    """Make each path's automatic OPTIONS answer list all of its methods.

    Litestar 2 builds a path's routes one handler at a time and keeps the OPTIONS handler of the
    first one, whose `Allow` names only that handler's methods (litestar#4169, fixed in v3): a
    path with GET and DELETE answered `Allow: GET, OPTIONS`. The handler reads the route it
    closes over, so it is pointed at the route that finally serves the path.
    """
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "OPTIONS" not in route.route_handler_map:
            continue
        closure = route.route_handler_map["OPTIONS"][0].fn.__closure__ or ()
        for cell in closure:
            if isinstance(cell.cell_contents, HTTPRoute):
                cell.cell_contents = route


def openapi_config(docs: Router) -> OpenAPIConfig:
    """The OpenAPI document and Swagger UI, served on `docs` (under /api, behind the key check)."""
    return OpenAPIConfig(
        title="Batchgate",
        version="0.1.0",
        description="Send one LLM request now, get its result delivered later.",
        openapi_router=docs,
        render_plugins=[SchemaJson(path=["/openapi", "/openapi.json"]), SWAGGER],
    )
