"""A running batch reads its requests a page at a time in id order (the local backend's lines,
the OpenAI backend's input file). A page must be one range of the batch's own ids, whatever the
other batches hold: at 1,000,000 processing requests on PostgreSQL a page that went through the
status index read all of them (210 ms a page, 170 lines a second)."""

from __future__ import annotations

from sqlalchemy import update

from app.core.runs.lines import batch_page
from app.db.models import Request
from app.db.session import Database
from app.ground.statuses import RequestStatus
from testkit.anthropic_batch import ready_batch


async def test_a_page_is_a_range_of_the_batchs_ids(db: Database) -> None:
    # Statistics taken while the batch's requests were batched say none is processing (as after
    # a burst of work, before autovacuum's next ANALYZE): the status index looks best to a
    # planner that may use it.
    await ready_batch(db, *(f"other{n}" for n in range(2000)))
    batch_id = await ready_batch(db, *(f"r{n}" for n in range(100)))
    async with db.engine.begin() as conn:
        if db.is_postgres:  # SQLite is never analyzed (app.db.planner)
            await conn.exec_driver_sql("ANALYZE requests")
        await conn.execute(update(Request).values(status=RequestStatus.PROCESSING))
    page = batch_page((Request.id, Request.body), batch_id, RequestStatus.PROCESSING, 0, 500)
    async with db.engine.connect() as conn:
        sql = str(page.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        if db.is_postgres:
            # A small table is read whole otherwise: the test asks which index serves the page.
            await conn.exec_driver_sql("SET enable_seqscan = off")
            plan = " ".join(row[0] for row in await conn.exec_driver_sql("EXPLAIN " + sql))
            # (With statistics this stale it may sort the batch's rest: a batch's, not a status's.)
            assert "ix_requests_batch_id" in plan, plan
        else:
            plan = " ".join(row[-1] for row in await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
            assert "ix_requests_batch_id (batch_id=? AND id>?)" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
    assert "ix_requests_status_id" not in plan, plan
