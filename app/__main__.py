"""The `batchgate` command: serve, migrate, makemigration."""

from __future__ import annotations

import argparse
import gc
import logging
from typing import Any

from app.ground import logs
from app.ground.config import Settings

# New objects between two collections of the youngest generation (Python's default is 700).
YOUNG_GC_THRESHOLD = 20_000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="batchgate", description="Self-hosted LLM batch gateway.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the API and UI (and run the scheduler)")
    serve.add_argument("--migrate", action="store_true", help="apply migrations first")
    serve.add_argument(
        "--role",
        choices=("all", "api", "worker"),
        help="api: the API and UI; worker: the pipeline and RabbitMQ intake (only /health and "
        "/metrics on HTTP); all (default, or SERVE_ROLE): both",
    )
    sub.add_parser("migrate", help="apply database migrations up to head")
    make = sub.add_parser("makemigration", help="autogenerate a migration from the models (developers)")
    make.add_argument("message")
    args = parser.parse_args(argv)

    settings = Settings()
    if getattr(args, "role", None):
        settings = settings.model_copy(update={"serve_role": args.role})
    logs.configure(settings.log_level, settings.log_format)
    if settings.log_level != "debug":
        # httpx logs every request at INFO: one line per inference call and webhook. The attempts
        # are audited in the database; the log keeps what went wrong.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.command == "migrate" or (args.command == "serve" and args.migrate):
        from app.db.migrate import upgrade

        upgrade(settings.database_url)
        logging.getLogger("batchgate").info("database migrated: %s", _redact(settings.database_url))
    if args.command == "makemigration":
        from app.db.migrate import revision

        revision(settings.database_url, args.message)
    if args.command == "serve":
        import uvicorn

        from app.asgi import create_app

        app = create_app(settings)
        # What is alive now (modules, the app) lives as long as the process: out of the garbage
        # collector's sight, its full collections stop walking it, which cut intake's p99 in half.
        gc.collect()
        gc.freeze()
        # A collection of the young generation every 700 new objects ran once or twice per
        # request (6% of intake's CPU time); nearly all of a request's objects are freed by their
        # reference counts long before 20,000 more exist, so each collection finds little.
        gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
        uvicorn.run(app, **server_options(settings))


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for `batchgate serve`; bench.http_intake serves its no-op route with them too."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        # None: uvicorn's own lines go through the root handler, in LOG_FORMAT too.
        "log_config": None,
        "loop": settings.server_loop,
        "http": settings.server_http,
        # The app reads X-Forwarded-* itself (app.web.forwarded, FORWARDED_ALLOW_IPS): uvicorn's
        # reading would replace the peer's address before the app could tell a proxy's headers
        # from a client's, and trusts 127.0.0.1 unless told otherwise.
        "proxy_headers": False,
    }


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    main()
