"""Inputs that made a face answer 500 (issue 24), now refused as bad input in the face's own
shape, alike on SQLite and PostgreSQL, at the documented limits: exactly at a limit is taken,
one past it refused, and a refusal keeps nothing (no row, no file under DATA_DIR)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.core.dropin import file_store
from app.core.rules.errors import BatchgateError
from app.db.models import Batch, File, Request
from testkit import RunningApp, StartApp, fast_settings
from testkit.openai_sdk import ENDPOINT


async def count(app: RunningApp, table: Any) -> int:
    async with app.db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


def stored(app: RunningApp) -> list[Path]:
    return [p for p in Path(app.settings.data_dir).rglob("*") if p.is_file()]


def openai_refused(answer: httpx.Response, param: str) -> str:
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param), error
    assert answer.headers["x-should-retry"] == "false"
    return str(error["message"])


def anthropic_refused(answer: httpx.Response) -> str:
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
    return str(body["error"]["message"])


def line(custom_id: str, model: str = "m") -> bytes:
    record = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": {"model": model}}
    return json.dumps(record).encode() + b"\n"


async def upload(app: RunningApp, content: bytes, **fields: str) -> httpx.Response:
    return await app.client.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch", **fields}
    )


def form_with_filename(filename: bytes) -> tuple[bytes, dict[str, str]]:
    """A multipart upload whose filename is these exact bytes (httpx would escape them)."""
    body = (
        b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename
        + b'"\r\n\r\n'
        + line("a")
        + b"\r\n--b--\r\n"
    )
    return body, {"content-type": "multipart/form-data; boundary=b"}


async def test_expires_after_seconds_are_ascii_digits_only(database_url: str, start_app: StartApp) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        # Superscripts pass str.isdigit() and failed int() (500); Arabic-Indic digits became 3600;
        # over 4,300 digits int() refuses (500).
        for seconds in (
            "³⁶⁰⁰",
            "٣٦٠٠",
            "\uff13\uff16\uff10\uff10",  # fullwidth digits
            "1" * 4301,
            "9" * 5000,
            "3600 ",
            "+3600",
            "",
            "3599",
            "2592001",
        ):
            refused = await upload(
                app, line("a"), **{"expires_after[anchor]": "created_at", "expires_after[seconds]": seconds}
            )
            openai_refused(refused, "expires_after")
        assert (await count(app, File), stored(app)) == (0, [])
        for seconds in ("3600", "2592000", "0003600"):
            taken = await upload(
                app, line("a"), **{"expires_after[anchor]": "created_at", "expires_after[seconds]": seconds}
            )
            assert taken.status_code == 200, taken.text
            body = taken.json()
            assert body["expires_at"] - body["created_at"] in range(int(seconds) - 1, int(seconds) + 2)


async def test_a_filename_the_files_table_cannot_hold_is_refused_and_nothing_is_kept(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        for filename in (b"a\x00b.jsonl", b"n" * 256, "é".encode() * 256):
            body, headers = form_with_filename(filename)
            message = openai_refused(
                await app.client.post("/v1/files", content=body, headers=headers), "file"
            )
            assert "filename" in message
        # Not UTF-8 (a lone surrogate's bytes): refused as a malformed form.
        body, headers = form_with_filename("\ud800".encode("utf-8", "surrogatepass"))
        assert (await app.client.post("/v1/files", content=body, headers=headers)).status_code == 400
        assert (await count(app, File), stored(app)) == (0, [])

        for name in ("n" * 255, "é" * 255, "😀" * 255):
            body, headers = form_with_filename(name.encode())
            taken = await app.client.post("/v1/files", content=body, headers=headers)
            assert taken.status_code == 200 and taken.json()["filename"] == name, taken.text
        assert (await count(app, File), len(stored(app))) == (3, 3)


async def test_bytes_whose_row_cannot_be_written_are_not_kept(database_url: str, start_app: StartApp) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:

        async def chunks() -> Any:
            yield line("a")

        # A batch that does not exist: the row's foreign key fails the insert on both databases.
        with pytest.raises(Exception) as caught:
            await file_store.store(
                app.db,
                app.settings.data_dir,
                chunks(),
                filename="x",
                purpose="batch",
                max_bytes=10**6,
                batch_id=10**9,
            )
        assert not isinstance(caught.value, BatchgateError)
        assert (await count(app, File), stored(app)) == (0, [])


async def test_openai_lines_past_the_column_limits_fail_the_batch_alike(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:

        async def create(*lines: bytes) -> dict[str, Any]:
            uploaded = (await upload(app, b"".join(lines))).json()
            params = {"input_file_id": uploaded["id"], "endpoint": ENDPOINT, "completion_window": "24h"}
            answer = await app.client.post("/v1/batches", json=params)
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            return body

        # Exactly at the limits, in characters of several UTF-8 widths: taken.
        taken = await create(line("é" * 512, "😀" * 255), line("😀" * 512, "😀" * 255))
        assert taken["status"] == "validating" and taken["errors"] is None
        assert await count(app, Request) == 2

        past = await create(line("a" * 513), line("b", "m" * 256), line("c", "😀" * 256), line("d" * 600))
        assert past["status"] == "failed" and past["model"] == "unknown"
        found = [(e["line"], e["code"], e["param"]) for e in past["errors"]["data"]]
        assert found == [
            (1, "string_above_max_length", "custom_id"),
            (2, "string_above_max_length", "body.model"),
            (3, "string_above_max_length", "body.model"),
            (4, "string_above_max_length", "custom_id"),
        ]
        assert (await count(app, Request), await count(app, Batch)) == (2, 2)


def anthropic_entry(custom_id: str = "a", **params: Any) -> dict[str, Any]:
    base = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    return {"custom_id": custom_id, "params": base | params}


async def test_anthropic_ids_and_models_past_their_limits_are_refused_alike(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        for entry, where in (
            (anthropic_entry("a" * 65), "requests.0.custom_id"),
            (anthropic_entry(model="m" * 256), "requests.0.params.model"),
            (anthropic_entry(model="é" * 256), "requests.0.params.model"),
        ):
            answer = await app.client.post("/v1/messages/batches", json={"requests": [entry]})
            assert where in anthropic_refused(answer)
        assert (await count(app, Batch), await count(app, Request), stored(app)) == (0, 0, [])

        at_limit = [anthropic_entry("a" * 64, model="é" * 255), anthropic_entry("b" * 64, model="😀" * 255)]
        answer = await app.client.post("/v1/messages/batches", json={"requests": at_limit})
        assert answer.status_code == 200, answer.text
        assert (await count(app, Batch), await count(app, Request)) == (1, 2)


MALFORMED_PARAMS = [
    ({"metadata": "oops"}, "params.metadata"),
    ({"metadata": {"user_id": 5}}, "params.metadata.user_id"),
    ({"messages": ["hi"]}, "params.messages.0"),
    ({"messages": "hi"}, "params.messages"),
    ({"messages": [{"role": "user"}]}, "params.messages.0.content"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "params.messages.0.role"),
    ({"messages": [{"role": "user", "content": 5}]}, "params.messages.0.content"),
    ({"messages": [{"role": "user", "content": ["hi"]}]}, "params.messages.0.content.0"),
    (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        "params.messages.0.content.0.text",
    ),
    ({"max_tokens": "5"}, "params.max_tokens"),
    ({"max_tokens": 1.5}, "params.max_tokens"),
    ({"max_tokens": True}, "params.max_tokens"),
    ({"system": 5}, "params.system"),
    ({"system": [5]}, "params.system.0"),
    ({"stop_sequences": "stop"}, "params.stop_sequences"),
    ({"temperature": "hot"}, "params.temperature"),
    ({"top_k": -1}, "params.top_k"),
]


async def test_malformed_anthropic_params_are_refused_at_create(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        for params, where in MALFORMED_PARAMS:
            answer = await app.client.post(
                "/v1/messages/batches", json={"requests": [anthropic_entry(**params)]}
            )
            message = anthropic_refused(answer)
            assert message.startswith(f"requests.0.{where}: "), message
            assert "Error" not in message  # no Python exception text
        assert (await count(app, Batch), await count(app, Request), stored(app)) == (0, 0, [])


async def test_the_native_api_refuses_ids_and_models_past_the_columns(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:

        async def submit(custom_id: str, model: str) -> httpx.Response:
            return await app.submit(custom_id, None, model=model)

        for custom_id, model, code in (
            ("a" * 513, "m", "invalid_custom_id"),
            ("b", "é" * 256, "invalid_model"),
        ):
            answer = await submit(custom_id, model)
            assert answer.status_code == 422 and answer.json()["errors"][0]["code"] == code, answer.text
        assert await count(app, Request) == 0
        for custom_id, model in (("é" * 512, "é" * 255), ("😀" * 512, "a" * 255)):
            assert (await submit(custom_id, model)).status_code == 202
        assert await count(app, Request) == 2


async def test_the_ui_batch_filter_takes_only_a_batch_number(database_url: str, start_app: StartApp) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        # Anything but ASCII digits within int64 filters nothing (as any other text always did).
        for typed in ("³", "٣", "9" * 30, "9" * 5000, "-1", "abc", "1"):
            answer = await app.client.get("/requests", params={"batch_id": typed})
            assert answer.status_code == 200, answer.text[:500]


def cursor(values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


async def test_a_list_cursor_not_made_for_its_order_shows_the_first_page(
    database_url: str, start_app: StartApp
) -> None:
    async with start_app(fast_settings(database_url, scheduler_enabled=False)) as app:
        assert (await app.submit("a", None)).status_code == 202
        # The UI's cursors are opaque but come back from the address bar: a crafted one held
        # values of the wrong type for its columns and failed the query (500).
        crafted = [[["2026", 1]], ["1"], [True], [2**63], [1.5], [None], ["a\x00", 1], [1, 2, 3], {"a": 1}]
        for page, sort in (("/requests", "newest"), ("/requests", "custom_id"), ("/batches", "status")):
            for values in crafted:
                for side in ("after", "before"):
                    answer = await app.client.get(page, params={"sort": sort, side: cursor(values)})
                    assert answer.status_code == 200, (page, sort, values, answer.text[:300])
