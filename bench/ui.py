"""The operator UI's pages on a database of 1,000,000 requests, against the cheapest equivalent query.

    .venv/bin/python -m bench.ui [--db sqlite|postgres] [--requests N] [--samples S]

Fill: a fresh migrated database gets N requests (default 1,000,000) written raw, outside the app:
asyncpg COPY then VACUUM ANALYZE on PostgreSQL, one executemany transaction on SQLite. The mix:
batches of 1,000 requests (mostly done, every 100th failed, the newest two processing, the newest
1,000 requests still pending and unbatched), one model of five per batch, custom_ids cust-000123456,
created_at spread evenly over the last two hours, ~2% of requests failed, and one webhook delivery
per finished request (~99.3% delivered, 0.5% delivery_failed, 0.2% retrying).

Pages: the real app (`create_app`, scheduler off) served on loopback in this process, fetched one at
a time by one httpx client, S times each after 3 warm-ups, as htmx does (`HX-Request: true`: the
fragment only) unless marked "full page". The dashboard is fetched with the stats cache cleared
before each fetch (uncached), again as the 5 s cache serves it, and `stats.dashboard()` is also
called directly, uncached (the same queries without HTTP and templates).

Limit (raw): the cheapest equivalent query straight through the driver (asyncpg / aiosqlite) on the
same event loop, interleaved with the page fetches: `SELECT * FROM requests|batches ORDER BY id DESC
LIMIT 25` for the lists, the row by primary key for a detail page, `SELECT status, count(*) FROM
requests GROUP BY status` for the dashboard. The table gives raw / page: at most 1, closer is better.

Then every page is fetched 3 more times with SQLAlchemy's statements timed. Statements taking at
least HEAVY times the raw list query (which reads 25 rows by the primary key) are listed with their
plan: EXPLAIN QUERY PLAN on SQLite; on PostgreSQL EXPLAIN ANALYZE of the custom plan and, when it
differs, of the generic plan that a prepared statement switches to after five executions.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sqlite3
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiosqlite
import asyncpg
import httpx
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.asgi import create_app
from app.core.read import queries, stats
from app.core.rules.owners import ADMIN
from app.db.session import Database
from app.ground.clock import utcnow
from app.ground.config import Settings
from app.web.state import app_state
from bench import summary
from bench.common import fresh_database, print_table
from testkit.standins.serve import serve

BATCH_SIZE = 1000
MODELS = ("gpt-4o-mini", "gpt-4.1-nano", "llama-3.1-8b-instruct", "qwen2.5-7b-instruct", "mistral-small")
ENDPOINT = "/v1/chat/completions"
HOOK = '{"type": "webhook", "webhook_url": "http://127.0.0.1:9/hook"}'
SPAN = timedelta(hours=2)
WARM_UP = 3
TRACED = 3  # instrumented fetches per page, after the timed ones
HEAVY = 20  # a statement this many times the raw list query gets its plan printed

BATCH_COLUMNS = (
    "id", "backend", "endpoint", "model", "origin", "status", "request_count", "bytes", "completed_count",
    "failed_count", "close_requested", "run_failures", "error", "created_at", "status_changed_at",
    "ready_at", "submitted_at", "finished_at",
)  # fmt: skip
REQUEST_COLUMNS = (
    "id", "custom_id", "origin", "backend", "endpoint", "model", "body", "body_bytes", "delivery", "status",
    "batch_id", "response", "error", "inference_attempts", "prompt_tokens", "completion_tokens",
    "total_tokens", "created_at", "submitted_at", "completed_at",
)  # fmt: skip
DELIVERY_COLUMNS = (
    "id", "request_id", "channel", "target", "status", "attempts", "total_attempts", "next_attempt_at",
    "last_error", "created_at", "delivered_at",
)  # fmt: skip

RAW_SQL = {
    "list": "SELECT * FROM requests ORDER BY id DESC LIMIT 25",
    "list b": "SELECT * FROM batches ORDER BY id DESC LIMIT 25",
    "by id": "SELECT * FROM requests WHERE id = {request_id}",
    "by id b": "SELECT * FROM batches WHERE id = {batch_id}",
    "count": "SELECT status, count(*) FROM requests GROUP BY status",
}

Timestamp = Callable[[datetime | None], Any]


@dataclass(frozen=True, slots=True)
class Mix:
    """The synthetic history. Every row is a function of its index, so both databases get the same."""

    n: int
    now: datetime

    @property
    def batches(self) -> int:
        """Batches of BATCH_SIZE; the newest BATCH_SIZE requests (or fewer) are still pending."""
        return max(0, -(-self.n // BATCH_SIZE) - 1)

    def created(self, i: int) -> datetime:
        return self.now - SPAN + SPAN * (i / self.n)

    def batch_status(self, b: int) -> str:
        if b > self.batches - 2:
            return "processing"
        return "failed" if b % 100 == 50 else "done"

    def request_status(self, i: int) -> tuple[int | None, str]:
        """(batch id, status) of request index i (row id i + 1)."""
        b = i // BATCH_SIZE + 1
        if b > self.batches:
            return None, "pending"
        batch = self.batch_status(b)
        if batch == "processing":
            return b, "processing"
        return b, "failed" if batch == "failed" or i % 100 == 37 else "succeeded"

    @staticmethod
    def delivery_status(i: int) -> str:
        return "delivery_failed" if i % 200 == 3 else "retrying" if i % 500 == 11 else "delivered"

    @staticmethod
    def model(i: int) -> str:
        return MODELS[(i // BATCH_SIZE) % len(MODELS)]

    @staticmethod
    def body(i: int) -> str:
        model = Mix.model(i)
        return (
            f'{{"model": "{model}", "messages": [{{"role": "user", "content": "say hi to cust-{i:09d}"}}]}}'
        )

    def tables(self, ts: Timestamp) -> Iterator[tuple[str, tuple[str, ...], Iterator[tuple[Any, ...]]]]:
        yield "batches", BATCH_COLUMNS, self._batch_rows(ts)
        yield "requests", REQUEST_COLUMNS, self._request_rows(ts)
        yield "deliveries", DELIVERY_COLUMNS, self._delivery_rows(ts)

    def _batch_rows(self, ts: Timestamp) -> Iterator[tuple[Any, ...]]:
        minute = timedelta(minutes=1)
        for b in range(1, self.batches + 1):
            first, last = (b - 1) * BATCH_SIZE, b * BATCH_SIZE - 1
            outcomes = [self.request_status(i)[1] for i in range(first, last + 1)]
            status = self.batch_status(b)
            ready = self.created(last)
            finished = ready + 2 * minute if status != "processing" else None
            failed = status == "failed"
            error = '{"code": "backend_error", "message": "the backend failed the batch"}' if failed else None
            yield (
                b, "local", ENDPOINT, self.model(first), "api", status, BATCH_SIZE,
                sum(len(self.body(i)) for i in range(first, last + 1)),
                outcomes.count("succeeded"), outcomes.count("failed"), False, 3 if failed else 0, error,
                ts(self.created(first)), ts(finished or ready + minute), ts(ready), ts(ready + minute),
                ts(finished),
            )  # fmt: skip

    def _request_rows(self, ts: Timestamp) -> Iterator[tuple[Any, ...]]:
        minute = timedelta(minutes=1)
        for i in range(self.n):
            batch_id, status = self.request_status(i)
            model, body, created = self.model(i), self.body(i), self.created(i)
            response = error = prompt = completion = total = None
            if status == "succeeded":
                prompt, completion = 12, 3 + i % 40
                total = prompt + completion
                response = (
                    f'{{"status_code": 200, "body": {{"id": "chatcmpl-{i}", "object": "chat.completion", '
                    f'"model": "{model}", "choices": [{{"index": 0, "message": {{"role": "assistant", '
                    f'"content": "hi cust-{i:09d}"}}, "finish_reason": "stop"}}], '
                    f'"usage": {{"prompt_tokens": {prompt}, "completion_tokens": {completion}, '
                    f'"total_tokens": {total}}}}}}}'
                )
            elif status == "failed":
                error = '{"code": "backend_error", "message": "the backend answered HTTP 500"}'
            finished = status in ("succeeded", "failed")
            yield (
                i + 1, f"cust-{i:09d}", "api", "local", ENDPOINT, model, body, len(body), HOOK, status,
                batch_id, response, error, 1 if batch_id else 0, prompt, completion, total, ts(created),
                ts(created + minute if batch_id else None), ts(created + 2 * minute if finished else None),
            )  # fmt: skip

    def _delivery_rows(self, ts: Timestamp) -> Iterator[tuple[Any, ...]]:
        attempts = {"delivered": 1, "retrying": 2, "delivery_failed": 8}
        ident = 0
        for i in range(self.n):
            if self.request_status(i)[1] not in ("succeeded", "failed"):
                continue
            ident += 1
            status, finished = self.delivery_status(i), self.created(i) + timedelta(minutes=2)
            yield (
                ident, i + 1, "webhook", HOOK, status, attempts[status], attempts[status],
                ts(self.now + timedelta(seconds=30)) if status == "retrying" else None,
                None if status == "delivered" else "HTTP 503 from the receiver", ts(finished),
                ts(finished + timedelta(seconds=1)) if status == "delivered" else None,
            )  # fmt: skip


def sqlite_path(url: str) -> str:
    return url.split(":///", 1)[1]


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def fill_postgres(url: str, mix: Mix) -> None:
    """COPY every table (indexes in place, as migrated), set the identity sequences, VACUUM ANALYZE."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        for table, columns, rows in mix.tables(lambda at: at):
            await conn.copy_records_to_table(table, records=rows, columns=columns)
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
            )
        # As autovacuum would leave them: statistics, and a visibility map for index-only scans.
        await conn.execute("VACUUM (ANALYZE) batches, requests, deliveries")
    finally:
        await conn.close()


def fill_sqlite(path: str, mix: Mix, deadline: float) -> None:
    """executemany of every table in one transaction, on the stdlib driver, in this thread.

    No ANALYZE: the app never runs it, so its SQLite databases have no statistics either.
    """

    def ts(at: datetime | None) -> str | None:  # as DateTimeUTC stores it on SQLite
        return at.strftime("%Y-%m-%d %H:%M:%S.%f") if at else None

    conn = sqlite3.connect(path, isolation_level=None)
    conn.set_progress_handler(lambda: time.monotonic() > deadline, 100_000)  # aborts at the deadline
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB: the index updates stay in memory
        conn.execute("BEGIN")
        for table, columns, rows in mix.tables(ts):
            marks = ", ".join("?" * len(columns))
            conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.OperationalError as exc:
        if time.monotonic() > deadline:
            raise TimeoutError("the SQLite fill did not finish within the deadline") from exc
        raise
    finally:
        conn.close()


async def fill(kind: str, url: str, mix: Mix, timeout: float) -> float:  # noqa: ASYNC109
    """Fill the database; the seconds it took."""
    start = time.perf_counter()
    if kind == "postgres":
        try:
            async with asyncio.timeout(timeout):
                await fill_postgres(url, mix)
        except TimeoutError:
            raise TimeoutError(f"the PostgreSQL fill did not finish within {timeout:g} s") from None
    else:
        await asyncio.to_thread(fill_sqlite, sqlite_path(url), mix, time.monotonic() + timeout)
    return time.perf_counter() - start


class Raw:
    """The limit: one statement straight through the driver, every row fetched."""

    def __init__(self, run: Callable[[str], Awaitable[Any]], sql: dict[str, str]) -> None:
        self.run, self.sql = run, sql

    @staticmethod
    @asynccontextmanager
    async def open(kind: str, url: str, ids: dict[str, int]) -> AsyncIterator[Raw]:
        sql = {key: text.format(**ids) for key, text in RAW_SQL.items()}
        if kind == "postgres":
            pg = await asyncpg.connect(asyncpg_dsn(url))
            try:
                yield Raw(pg.fetch, sql)  # asyncpg prepares and caches each statement
            finally:
                await pg.close()
            return
        async with aiosqlite.connect(sqlite_path(url)) as lite:

            async def run(text: str) -> list[Any]:
                async with lite.execute(text) as cursor:
                    return list(await cursor.fetchall())

            yield Raw(run, sql)


class Statements:
    """SQLAlchemy's statements on an engine, each with its time (while attached)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine.sync_engine
        self.log: list[tuple[str, Any, float]] = []

    def _before(self, conn: Any, _cursor: Any, _statement: str, _params: Any, _ctx: Any, _many: bool) -> None:
        conn.info.setdefault("bench_ui_started", []).append(time.perf_counter())

    def _after(self, conn: Any, _cursor: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        started = conn.info["bench_ui_started"].pop()
        self.log.append((statement, params, time.perf_counter() - started))

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)


@dataclass(frozen=True, slots=True)
class Page:
    name: str
    path: str  # a URL path, or "" for a direct stats.dashboard() call
    raw: str  # the RAW_SQL key of its limit
    htmx: bool = True
    uncached: bool = False  # clear the dashboard's stats cache before each fetch


@dataclass(slots=True)
class Result:
    page: Page
    times: list[float]
    raw: list[float]
    rows: str
    statements: list[tuple[str, Any, float]] = field(default_factory=list)


def pages(batch_cursor: str, request_cursor: str, ids: dict[str, int]) -> list[Page]:
    model = MODELS[0]
    return [
        Page("/batches", "/batches", "list b"),
        Page("/batches?status=failed", "/batches?status=failed", "list b"),
        Page("/batches?sort=status, page 2", f"/batches?sort=status&after={batch_cursor}", "list b"),
        Page("/requests", "/requests", "list"),
        Page("/requests (full page)", "/requests", "list", htmx=False),
        Page("/requests?status=failed", "/requests?status=failed", "list"),
        Page("/requests?search=cust-0004 (prefix)", "/requests?search=cust-0004&match=prefix", "list"),
        Page("/requests?search=12345 (contains)", "/requests?search=12345&match=contains", "list"),
        Page("/requests?sort=custom_id", "/requests?sort=custom_id", "list"),
        Page("/requests?sort=custom_id, page 2", f"/requests?sort=custom_id&after={request_cursor}", "list"),
        Page(
            "/requests?delivery_status=delivery_failed", "/requests?delivery_status=delivery_failed", "list"
        ),
        Page(f"/requests?model={model}", f"/requests?model={model}", "list"),
        Page(f"/batches/{ids['batch_id']}", f"/batches/{ids['batch_id']}", "by id b"),
        Page(f"/requests/{ids['request_id']}", f"/requests/{ids['request_id']}", "by id"),
        Page("/ dashboard, uncached", "/", "count", uncached=True),
        Page("/ dashboard, cached (5 s)", "/", "count"),
        Page("stats.dashboard() direct, uncached", "", "count", uncached=True),
    ]


async def measure(
    page: Page,
    client: httpx.AsyncClient,
    db: Database,
    raw: Raw,
    samples: int,
    timeout: float,  # noqa: ASYNC109
) -> Result:
    """S page fetches, each after one raw query, following WARM_UP untimed pairs."""
    headers = {"HX-Request": "true"} if page.htmx else {}
    body = ""

    async def fetch() -> float:
        nonlocal body
        if page.uncached:
            stats.dashboard.forget()
        start = time.perf_counter()
        if not page.path:
            await stats.dashboard(db)
            return time.perf_counter() - start
        response = await client.get(page.path, headers=headers)
        elapsed = time.perf_counter() - start
        if response.status_code != 200:
            raise RuntimeError(f"{page.path}: HTTP {response.status_code} {response.text[:200]}")
        body = response.text
        return elapsed

    async def query() -> float:
        start = time.perf_counter()
        await raw.run(raw.sql[page.raw])
        return time.perf_counter() - start

    times: list[float] = []
    raws: list[float] = []
    try:
        async with asyncio.timeout(timeout):
            for _ in range(WARM_UP):
                await query()
                await fetch()
            for _ in range(samples):
                raws.append(await query())
                times.append(await fetch())
            with Statements(db.engine) as statements:
                for _ in range(TRACED):
                    await fetch()
    except TimeoutError:
        raise TimeoutError(f"{page.name}: not measured within {timeout:g} s") from None
    listed = body.count('<tr id="request-') + body.count('<tr id="batch-')
    rows = str(listed) if page.raw.startswith("list") else "-"
    return Result(page, times, raws, rows, typical(statements.log, TRACED))


def typical(log: list[tuple[str, Any, float]], fetches: int) -> list[tuple[str, Any, float]]:
    """The statements of one fetch, each with its median time over `fetches` identical fetches."""
    if not log or len(log) % fetches:
        return log
    per = len(log) // fetches
    runs = [log[k * per : (k + 1) * per] for k in range(fetches)]
    if any(run[j][0] != runs[0][j][0] for run in runs for j in range(per)):
        return log[-per:]
    return [
        (sql, params, statistics.median(run[j][2] for run in runs))
        for j, (sql, params, _) in enumerate(runs[-1])
    ]


async def explain(kind: str, url: str, statement: str, params: Any) -> list[str]:
    """The statement's plan. On PostgreSQL: EXPLAIN ANALYZE of the custom plan (the first executions of
    a prepared statement) and, when its shape differs, of the generic plan: SQLAlchemy's asyncpg
    dialect keeps statements prepared per connection, and the server may switch to that plan from
    the sixth execution on."""
    if kind == "sqlite":
        async with (
            aiosqlite.connect(sqlite_path(url)) as lite,
            lite.execute(f"EXPLAIN QUERY PLAN {statement}", params) as cursor,
        ):
            return [row[3] for row in await cursor.fetchall()]
    analyze = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF)"
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        custom = [row[0] for row in await conn.fetch(f"{analyze} {statement}", *params)]
        await conn.execute(f"PREPARE bench_ui_generic AS {statement}")
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        literals = ", ".join(literal(value) for value in params)
        execute = f"EXECUTE bench_ui_generic({literals})" if literals else "EXECUTE bench_ui_generic"
        generic = [row[0] for row in await conn.fetch(f"{analyze} {execute}")]
    finally:
        await conn.close()
    if shape(generic) == shape(custom):
        return ["custom and generic plan:", *custom]
    return ["custom plan:", *custom, "generic plan:", *generic]


def literal(value: Any) -> str:
    """A parameter as an SQL literal, for EXECUTE (which takes no bind parameters)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool | int | float):
        return str(value).upper() if isinstance(value, bool) else str(value)
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text.replace("'", "''") + "'"


def shape(plan: list[str]) -> list[str]:
    """The plan's nodes without their numbers."""
    return [re.sub(r"\s*\(actual.*", "", line).strip() for line in plan if "actual" in line]


_COLUMNS = re.compile(r"(\w+)\.\w+(?: AS \w+)?(?:, \1\.\w+(?: AS \w+)?){3,}")


def short(statement: str) -> str:
    """The statement on one line, with long column lists as table.*."""
    return " ".join(_COLUMNS.sub(r"\1.*", statement).split())


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.2f}"


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def report_slowest(results: list[Any], kind: str, n: int) -> None:
    """The goal's outcome: the slowest page's p95 (pages only: the direct stats.dashboard() call
    has no path; the cached dashboard aside)."""
    timed = [r for r in results if r.page.path and "cached (5 s)" not in r.page.name]
    slowest = max(timed, key=lambda r: p95(r.times))
    summary.report(
        summary.Outcome(
            path=f"UI with {n:,} requests ({kind}): the slowest page's p95",
            measured=f"{slowest.page.name}; {len(timed)} pages, lists, filters, searches, uncached dashboard",
            figures=[p95(slowest.times) * 1000],
            goal=150,
            unit="ms",
            at_most=True,
        )
    )


async def main(kind: str, n: int, samples: int, timeout: float) -> None:  # noqa: ASYNC109
    mix = Mix(n, utcnow())
    batch_id = mix.batches // 2
    ids = {"batch_id": batch_id, "request_id": (batch_id - 1) * BATCH_SIZE + BATCH_SIZE // 2 + 1}
    async with fresh_database(kind) as url:
        seconds = await fill(kind, url, mix, timeout)
        deliveries = sum(1 for i in range(n) if mix.request_status(i)[1] in ("succeeded", "failed"))
        how = "asyncpg COPY + VACUUM ANALYZE" if kind == "postgres" else "sqlite3 executemany, 1 transaction"
        print(
            f"fill: {n:,} requests, {mix.batches:,} batches, {deliveries:,} deliveries "
            f"in {seconds:,.1f} s ({how})",
            flush=True,
        )
        app = create_app(
            Settings(database_url=url, scheduler_enabled=False, rabbitmq_url=None, _env_file=None)
        )
        async with (
            serve(app) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=timeout) as client,
            Raw.open(kind, url, ids) as raw,
        ):
            db = app_state(app.state).db
            batch_cursor = (
                await queries.batch_page(db, queries.BatchQuery(sort="status"), ADMIN)
            ).next_cursor
            request_cursor = (
                await queries.request_page(db, queries.RequestQuery(sort="custom_id"), ADMIN)
            ).next_cursor
            results = [
                await measure(page, client, db, raw, samples, timeout)
                for page in pages(batch_cursor or "", request_cursor or "", ids)
            ]
        unit = statistics.median(t for r in results if r.page.raw == "list" for t in r.raw)
        # The direct stats.dashboard() call runs the dashboard page's statements again: no plans twice.
        heavy = [(r, s) for r in results if r.page.path for s in r.statements if s[2] >= HEAVY * unit]
        plans = [await explain(kind, url, statement, params) for _, (statement, params, _) in heavy]

    header = f"{'page p50':>9} {'p95':>8} {'raw p50':>8}  {'raw query':<9} {'raw/page':>8} {'rows':>4} "
    header += f"{'SQL':>3} {'slowest SQL':>11}"
    table = [("page (ms)", header)]
    for r in results:
        page_ms, raw_ms = statistics.median(r.times), statistics.median(r.raw)
        slowest = max((s[2] for s in r.statements), default=0.0)
        table.append(
            (
                r.page.name,
                f"{ms(page_ms):>9} {ms(p95(r.times)):>8} {ms(raw_ms):>8}  {r.page.raw:<9} "
                f"{raw_ms / page_ms:>8.4f} {r.rows:>4} {len(r.statements):>3} {ms(slowest):>11}",
            )
        )
    print_table(
        f"bench.ui  db={kind}  requests={n:,}  samples={samples} after {WARM_UP} warm-ups (medians, ms)",
        table,
    )
    report_slowest(results, kind, n)
    print(
        f"\nStatements taking >= {HEAVY}x the raw list query ({ms(unit)} ms), "
        f"median of {TRACED} instrumented fetches; plan of each:"
    )
    for (r, (statement, params, took)), plan in zip(heavy, plans, strict=True):
        print(f"\n  {r.page.name}: {ms(took)} ms  {short(statement)[:400]}  {tuple(params)!r:.120}")
        for line in plan:
            print(f"      {line}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=30, help="timed fetches of each page")
    parser.add_argument("--timeout", type=float, default=600, help="deadline of each phase, seconds")
    args = parser.parse_args()
    if args.requests < 5 * BATCH_SIZE:
        parser.error(f"--requests must be at least {5 * BATCH_SIZE}")
    if args.samples < 2:
        parser.error("--samples must be at least 2")
    return args


if __name__ == "__main__":
    args = parse_args()
    asyncio.run(main(args.db, args.requests, args.samples, args.timeout))
