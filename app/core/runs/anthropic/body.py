"""The create body of a batch: its requests as Anthropic `{custom_id, params}` entries, written to
a file a chunk of rows at a time (a batch may approach 256 MB: never built in memory whole).

Each entry's custom_id is `<submission key>-<request id>`: Anthropic allows only
`[a-zA-Z0-9_-]{1,64}` (a user's custom_id may hold anything), the request id finds the row again,
and the key lets the results prove they belong to this submission. Chat requests are translated
to Messages params; one that cannot be is failed at once, the others go.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy import select

from app.core.runs.anthropic import endings
from app.db.models import Request
from app.db.session import Database
from app.formats.anthropic_messages import MESSAGES_URL
from app.formats.anthropic_tools import UnsupportedContent
from app.formats.chat_to_anthropic import to_params
from app.ground.statuses import RequestStatus

ROWS_PER_TRANSACTION = 1000
# Room for the envelope `{"requests": [` … `]}` within Anthropic's byte limit.
_ENVELOPE = 64


@dataclass
class Written:
    """What went into the body, and what stayed out."""

    sent: int = 0
    bytes: int = 0
    refused: dict[int, str] = field(default_factory=dict)  # request id → why it cannot be sent
    left_over: list[int] = field(default_factory=list)  # beyond Anthropic's limits


def custom_id(key: str, request_id: int) -> str:
    return f"{key}-{request_id}"


def request_id_of(key: str, sent_id: str) -> int | None:
    """The request id a result's custom_id names, or None when it is not of this submission."""
    prefix, _, number = sent_id.rpartition("-")
    return int(number) if prefix == key and number.isdigit() else None


def params_of(endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    """The Messages params of a stored request body (raises UnsupportedContent)."""
    if endpoint == MESSAGES_URL:
        return body
    if endpoint == "/v1/chat/completions":
        return to_params(body)
    raise UnsupportedContent(f"endpoint {endpoint} cannot run on the Anthropic Message Batches API")


async def write_body(db: Database, batch_id: int, key: str, file: IO[bytes]) -> Written:
    """Write the batch's batched requests to `file` in request id order, up to Anthropic's
    limits (endings.MAX_REQUESTS, endings.MAX_BYTES)."""
    most, room = endings.MAX_REQUESTS, endings.MAX_BYTES - _ENVELOPE
    written, after = Written(), 0
    file.write(b'{"requests":[')
    while True:
        async with db.transaction() as session:
            rows = (
                await session.execute(
                    select(Request.id, Request.endpoint, Request.body)
                    .where(Request.batch_id == batch_id, Request.status == RequestStatus.BATCHED)
                    .where(Request.id > after)
                    .order_by(Request.id)
                    .limit(ROWS_PER_TRANSACTION)
                )
            ).all()
        if not rows:
            break
        for request_id, endpoint, body in rows:
            after = request_id
            if written.left_over or written.sent >= most:
                written.left_over.append(request_id)
                continue
            try:
                entry = {"custom_id": custom_id(key, request_id), "params": params_of(endpoint, body)}
            except UnsupportedContent as exc:
                written.refused[request_id] = str(exc)
                continue
            line = (b"," if written.sent else b"") + json.dumps(entry, separators=(",", ":")).encode()
            if written.bytes + len(line) > room:
                written.left_over.append(request_id)
                continue
            file.write(line)
            written.sent += 1
            written.bytes += len(line)
    file.write(b"]}")
    file.flush()
    return written
