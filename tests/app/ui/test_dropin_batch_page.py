"""A drop-in batch's page shows what a user of its face looks for: the public batch id, the file
ids (OpenAI) or the results URL (Anthropic), that results are pulled through the face rather than
delivered, its real size and the tokens it used (issue 25), on SQLite and PostgreSQL."""

from __future__ import annotations

import re

from anthropic import AsyncAnthropic
from sqlalchemy import func, select, update

from app.db.models import Batch, Request
from app.ui.render import human_bytes
from testkit import RunningApp, StartApp, fast_settings
from testkit.anthropic_sdk import ended, entry
from testkit.openai_sdk import line, new_batch, sdk, until_status, upload
from testkit.standins.inference import InferenceStandin


def _dd(html: str, term: str) -> str:
    """The text of the <dd> after the <dt> `term`."""
    found = re.search(rf"<dt>{re.escape(term)}</dt><dd[^>]*>(.*?)</dd>", html, re.S)
    assert found, f"no {term!r} on the page"
    return found[1]


async def _size_and_tokens(app: RunningApp, batch_id: int) -> tuple[int, int]:
    async with app.db.transaction() as session:
        size = await session.scalar(select(func.sum(Request.body_bytes)).where(Request.batch_id == batch_id))
        batch = await session.get(Batch, batch_id)
        assert batch is not None and size
        return size, batch.input_tokens + batch.output_tokens


async def test_an_anthropic_batch_page_shows_its_id_results_url_size_and_tokens(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        client = AsyncAnthropic(base_url=app.url, api_key="x", max_retries=0)
        created = await client.messages.batches.create(requests=[entry("a"), entry("b")])  # type: ignore[list-item]
        await ended(client, created.id)
        batch_id = int(created.id.removeprefix("msgbatch_"))
        size, used = await _size_and_tokens(app, batch_id)
        assert used > 0

        html = (await app.client.get(f"/batches/{batch_id}")).text
        assert f"<code>{created.id}</code>" in html
        results_url = f"{app.url}/v1/messages/batches/{created.id}/results"
        assert results_url in _dd(html, "Results")
        assert "pulled through the Anthropic face (no delivery)" in html
        assert "Nothing to deliver yet" not in html
        assert _dd(html, "Size") == f"{human_bytes(size)} ({used} tokens used)"
        row = re.search(rf'<tr id="batch-{batch_id}".*?</tr>', (await app.client.get("/batches")).text, re.S)
        assert row and human_bytes(size) in row[0] and f">{used}</td>" in row[0] and "~0" not in row[0]

        # A batch recorded before its size was (bytes 0) shows its lines' size all the same.
        async with app.db.transaction() as session:
            await session.execute(update(Batch).where(Batch.id == batch_id).values(bytes=0))
        assert _dd((await app.client.get(f"/batches/{batch_id}")).text, "Size").startswith(
            human_bytes(size) + " ("
        )


async def test_an_openai_batch_page_shows_its_id_and_file_ids(
    database_url: str, inference: InferenceStandin, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, inference.url + "/v1")) as app:
        client = sdk(app, "/v1")
        uploaded = await upload(client, line("a"), line("b"))
        created = await new_batch(client, uploaded.id)
        done = await until_status(client, created.id, "completed")
        batch_id = int(done.id.removeprefix("batch_"))

        html = (await app.client.get(f"/batches/{batch_id}")).text
        assert f"<code>{done.id}</code>" in html
        face = re.search(r'id="batch-face".*?</div>', html, re.S)
        assert face, html
        for term, file_id in (
            ("Input file", uploaded.id),
            ("Output file", done.output_file_id),
            ("Error file", done.error_file_id or "—"),
        ):
            assert _dd(face[0], term) == f"<code>{file_id}</code>"
        assert "pulled through the OpenAI face (no delivery)" in html
        assert "Nothing to deliver yet" not in html
        _, used = await _size_and_tokens(app, batch_id)
        assert _dd(html, "Size").endswith(f"({used} tokens used)")
