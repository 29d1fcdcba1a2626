"""The stand-in servers and helpers shared by the tests and the benchmarks: request builders,
database lifecycle, the app served for real, RabbitMQ helpers, schema checks, waiting, wrk's report
(testkit.wrk) and the stand-ins (testkit.standins). Not part of the app: it is never packaged.
Import from here, never from a test module or a conftest.py (which only declares fixtures)."""

from testkit.amqp import (
    RABBITMQ_URL,
    Amqp,
    amqp_client,
    close_connections,
    rabbitmq_reachable,
    rabbitmqctl_available,
)
from testkit.apps import (
    API_KEYS,
    UNREACHABLE_INFERENCE,
    RunningApp,
    StartApp,
    fast_settings,
    run_app,
    run_app_at_its_port,
)
from testkit.builders import NO_DELIVERY, chat, client_request, new_batch, request_payload, to_queue, webhook
from testkit.databases import (
    IN_CI,
    PG_ADMIN_DSN,
    PG_HOST,
    PG_PORT,
    database_name,
    fresh_postgres,
    migrate,
    postgres_database,
    postgres_reachable,
    postgres_url,
    require_service,
    sqlite_url,
)
from testkit.schemas import check
from testkit.waiting import holds, wait_until

__all__ = [
    "API_KEYS",
    "IN_CI",
    "NO_DELIVERY",
    "PG_ADMIN_DSN",
    "PG_HOST",
    "PG_PORT",
    "RABBITMQ_URL",
    "UNREACHABLE_INFERENCE",
    "Amqp",
    "RunningApp",
    "StartApp",
    "amqp_client",
    "chat",
    "check",
    "client_request",
    "close_connections",
    "database_name",
    "fast_settings",
    "fresh_postgres",
    "holds",
    "migrate",
    "new_batch",
    "postgres_database",
    "postgres_reachable",
    "postgres_url",
    "rabbitmq_reachable",
    "rabbitmqctl_available",
    "request_payload",
    "require_service",
    "run_app",
    "run_app_at_its_port",
    "sqlite_url",
    "to_queue",
    "wait_until",
    "webhook",
]
