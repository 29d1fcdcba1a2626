# Batchgate: the API and the pipeline in one process, on port 4000.
# Embedded default: SQLite in the /data volume. Set DATABASE_URL for PostgreSQL (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Runs as an unprivileged user that owns only /data: /app stays root's and read-only to it, so
# everything the app writes (database, files, caches) must be under /data (ENV below).
RUN groupadd --system --gid 10001 batchgate \
    && useradd --system --uid 10001 --gid batchgate --home-dir /data --no-create-home batchgate \
    && mkdir -p /data \
    && chown batchgate:batchgate /data

WORKDIR /app

# Everything the app needs (pyproject.toml, README.md, app/, migrations/, templates/, static/);
# .dockerignore keeps out the virtualenv, local data, .env and caches.
COPY . .

# Editable install on purpose: app/db/migrate.py finds the Alembic scripts at
# Path(__file__).resolve().parents[2] / "migrations", i.e. next to the app package's source.
# A regular install would copy the package into site-packages and look for
# site-packages/migrations, which does not exist. Installed editable, the code runs from /app/app,
# next to /app/migrations (and templates/ and static/). Those two directories may be empty and then
# are absent from a git checkout, so they are created here.
RUN mkdir -p templates static \
    && pip install --no-cache-dir -e .

USER 10001:10001
# Run from inside the volume: a relative path (the ./data of .env.example, a .env copied from it)
# then lands in /data too, never in the read-only /app. The code is found through the install.
WORKDIR /data

# Every path the app writes to is in the volume: the SQLite database, DATA_DIR (drop-in uploads,
# output files, spooled bodies; the default ./data would be /app/data, not writable and not kept),
# and the home and cache directories libraries write to.
ENV DATA_DIR=/data \
    DATABASE_URL=sqlite+aiosqlite:////data/batchgate.db \
    HOME=/data \
    XDG_CACHE_HOME=/data/.cache \
    TIKTOKEN_CACHE_DIR=/data/.cache/tiktoken
# Reachable from outside the container: set API_KEYS (docs/security.md). Without a key the
# server warns at start and on the dashboard.
ENV HOST=0.0.0.0
VOLUME /data
EXPOSE 4000

# /health answers 200 when the database and the scheduler are fine, 503 otherwise.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '4000'), timeout=4)"]

# Applies pending migrations, then serves the API and runs the scheduler.
CMD ["batchgate", "serve", "--migrate"]
