"""File objects for the drop-in faces: bytes under DATA_DIR/files, one `files` row each.

Uploads are streamed to disk chunk by chunk and never held whole in memory; so are downloads.
A body that only one request reads (an Anthropic batch's request list) is spooled to
DATA_DIR/tmp instead, and deleted once that request is done with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from app.core.rules import storable
from app.core.rules.errors import InvalidInput, Problem, TooLarge, found
from app.core.rules.numbers import is_whole, whole_number
from app.core.rules.owners import Caller, visible
from app.db.models import File
from app.db.session import Database
from app.ground.clock import utcnow

CHUNK_BYTES = 1024 * 1024
TEMP_DIR = "tmp"  # under DATA_DIR: bodies spooled for one request, deleted after it
# What a crash leaves behind (a spooled body, a .part upload, bytes whose row was never
# committed) is deleted once it is this old: far longer than any one upload or create takes.
LEFTOVER_AGE = timedelta(days=1)
# OpenAI's `expires_after` bounds (1 hour to 30 days), and the longest name files.filename holds.
EXPIRES_AFTER_MIN, EXPIRES_AFTER_MAX = 3600, 30 * 24 * 3600
FILENAME_MAX_CHARS = 255
# What OpenAI's Files API takes as an upload's purpose, plus batch_output (the purpose of the files
# a batch produces), which this face has always taken.
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals", "batch_output")
ANCHOR_FIELD, SECONDS_FIELD = "expires_after[anchor]", "expires_after[seconds]"
# OpenAI's default: a `batch` upload expires after 30 days, every other purpose is kept until deleted.
BATCH_UPLOAD_LIFETIME = timedelta(days=30)
# How a stored file's purpose and lifetime are settled: asked once its bytes are written, because
# an upload's form fields may follow its file part.
Terms = Callable[[], tuple[str, timedelta | None]]


def new_id() -> str:
    return f"file-{uuid.uuid4().hex[:24]}"


def location(data_dir: str, file: File) -> Path:
    return Path(data_dir) / file.path


def expires_after(anchor: str | None, seconds: str | None) -> timedelta | None:
    """OpenAI's `expires_after` form fields as a lifetime; None when neither is given."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at" or seconds is None or not is_whole(seconds):
        raise _invalid(
            "expires_after needs anchor 'created_at' and whole seconds (digits 0-9).", "expires_after"
        )
    value = whole_number(seconds, EXPIRES_AFTER_MAX)
    if value is None or value < EXPIRES_AFTER_MIN:
        bounds = f"expires_after.seconds must be between {EXPIRES_AFTER_MIN} and {EXPIRES_AFTER_MAX}."
        raise _invalid(bounds, "expires_after")
    return timedelta(seconds=value)


def upload_terms(fields: Mapping[str, str], *, complete: bool = True) -> tuple[str, timedelta | None]:
    """An upload's purpose and lifetime from its form fields; InvalidInput naming the field that
    is wrong. With `complete` False (only the fields before the file are in), what is absent may
    still come and is not refused yet. A `batch` upload lives 30 days unless it says otherwise."""
    purpose = fields.get("purpose")
    if purpose not in UPLOAD_PURPOSES and (complete or purpose is not None):
        raise _invalid(f"purpose must be one of {', '.join(UPLOAD_PURPOSES)}.", "purpose")
    anchor, seconds = fields.get(ANCHOR_FIELD), fields.get(SECONDS_FIELD)
    after = expires_after(anchor, seconds) if complete or None not in (anchor, seconds) else None
    if after is None and purpose == "batch":
        after = BATCH_UPLOAD_LIFETIME
    return purpose or "", after


def output_expires_after(value: Any) -> timedelta | None:
    """A batch create's `output_expires_after` (JSON) as the lifetime of its output and error
    files, anchored at their creation as OpenAI anchors it; None when absent. InvalidInput naming
    the part that is wrong: OpenAI takes anchor 'created_at' and 3600 to 2592000 seconds."""
    if value is None:
        return None
    name = "output_expires_after"
    if not isinstance(value, dict):
        raise _invalid(f"{name} must be an object with anchor and seconds.", name)
    if value.get("anchor") != "created_at":
        raise _invalid(f"{name}.anchor must be 'created_at'.", f"{name}.anchor")
    seconds = value.get("seconds")
    # bool is an int to Python, not to JSON's readers.
    if (
        not isinstance(seconds, int)
        or isinstance(seconds, bool)
        or not (EXPIRES_AFTER_MIN <= seconds <= EXPIRES_AFTER_MAX)
    ):
        raise _invalid(
            f"{name}.seconds must be a whole number from {EXPIRES_AFTER_MIN} to {EXPIRES_AFTER_MAX}.",
            f"{name}.seconds",
        )
    return timedelta(seconds=seconds)


def check_filename(filename: str) -> str:
    """`filename` when the files table can hold it as it is; InvalidInput otherwise (PostgreSQL
    stores no NUL, and a name past the column's length fails the insert: both were 500s)."""
    if storable.text(filename) != filename:
        raise _invalid("The filename holds a NUL character or an unpaired surrogate.", "file")
    if len(filename) > FILENAME_MAX_CHARS:
        raise _invalid(f"The filename is longer than {FILENAME_MAX_CHARS} characters.", "file")
    return filename


def _invalid(detail: str, param: str) -> InvalidInput:
    return InvalidInput(Problem("invalid_value", "Invalid value", detail, param))


async def store(
    db: Database,
    data_dir: str,
    chunks: AsyncIterator[bytes],
    *,
    filename: str,
    purpose: str,
    max_bytes: int,
    batch_id: int | None = None,
    expires_at: datetime | None = None,
    owner: str = "",
) -> File:
    """Write `chunks` to a new file and record it with this purpose and expiry (see receive)."""
    after = None if expires_at is None else expires_at - utcnow()
    return await receive(
        db,
        data_dir,
        chunks,
        filename=filename,
        max_bytes=max_bytes,
        terms=lambda: (purpose, after),
        batch_id=batch_id,
        owner=owner,
    )


async def receive(
    db: Database,
    data_dir: str,
    chunks: AsyncIterator[bytes],
    *,
    filename: str,
    max_bytes: int,
    terms: Terms,
    batch_id: int | None = None,
    owner: str = "",
) -> File:
    """Write `chunks` to a new file of `owner`'s, then ask `terms` for its purpose and lifetime
    (counted from its creation) and record it. Nothing is kept when it fails: TooLarge past `max_bytes`,
    InvalidInput for a filename the table cannot hold (before a byte is written) or from `terms`,
    or whatever failed the row's insert."""
    check_filename(filename)
    file_id = new_id()
    relative = f"files/{file_id}"
    target = Path(data_dir) / relative
    partial = target.with_suffix(".part")
    try:
        size = await _write(chunks, partial, max_bytes, "file")
        purpose, lifetime = terms()
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    now = utcnow()
    row = File(
        id=file_id,
        purpose=purpose,
        filename=filename,
        bytes=size,
        path=relative,
        batch_id=batch_id,
        owner=owner,
        created_at=now,
        expires_at=None if lifetime is None else now + lifetime,
    )
    try:
        async with db.transaction() as session:
            session.add(row)
    except BaseException:
        target.unlink(missing_ok=True)  # bytes no row names would only wait for the sweep
        raise
    return row


async def _write(chunks: AsyncIterator[bytes], target: Path, max_bytes: int, what: str) -> int:
    """Write `chunks` to `target` as they arrive; TooLarge once past `max_bytes` (the rest is
    never read). Returns the size; the caller removes `target` when this raises."""
    target.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    with target.open("wb") as out:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise TooLarge(
                    Problem(
                        f"{what}_too_large",
                        f"{what.capitalize()} too large",
                        f"The {what} is larger than {max_bytes} bytes, the most this endpoint accepts.",
                    )
                )
            out.write(chunk)
    return size


@contextlib.asynccontextmanager
async def spooled(data_dir: str, chunks: AsyncIterator[bytes], max_bytes: int) -> AsyncIterator[Path]:
    """`chunks` written to a temporary file under DATA_DIR/tmp, for reading (more than once)
    inside the block; the file is deleted when the block ends, whatever the outcome."""
    path = Path(data_dir) / TEMP_DIR / f"{uuid.uuid4().hex}.body"
    try:
        await _write(chunks, path, max_bytes, "body")
        yield path
    finally:
        path.unlink(missing_ok=True)


async def get(db: Database, file_id: str, caller: Caller) -> File:
    """The file object; NotFound when there is none (or it was deleted, or is another team's)."""
    async with db.transaction() as session:
        return _seen(await session.get(File, file_id), file_id, caller)


def _seen(row: File | None, file_id: str, caller: Caller) -> File:
    return found(row if row is not None and caller.sees(row.owner) else None, "file", file_id)


async def page(
    db: Database, caller: Caller, *, purpose: str | None, limit: int, after: str | None, newest_first: bool
) -> tuple[list[File], bool]:
    """`caller`'s files in creation order (ties by id), after the file `after`; returns
    (files, has_more)."""
    order = (File.created_at.desc(), File.id.desc()) if newest_first else (File.created_at, File.id)
    stmt = select(File).where(visible(File.owner, caller)).order_by(*order).limit(limit + 1)
    if purpose:
        stmt = stmt.where(File.purpose == purpose)
    async with db.transaction() as session:
        if after:
            anchor = await session.get(File, after)
            if anchor is not None:
                key = (File.created_at, File.id)
                beyond = (
                    (key[0] < anchor.created_at) | ((key[0] == anchor.created_at) & (key[1] < anchor.id))
                    if newest_first
                    else (key[0] > anchor.created_at) | ((key[0] == anchor.created_at) & (key[1] > anchor.id))
                )
                stmt = stmt.where(beyond)
        rows = list((await session.scalars(stmt)).all())
    return rows[:limit], len(rows) > limit


async def delete(db: Database, data_dir: str, file_id: str, caller: Caller) -> None:
    """Delete the file object and its bytes."""
    async with db.transaction() as session:
        row = _seen(await session.get(File, file_id), file_id, caller)
        await session.delete(row)
    remove_bytes(data_dir, [row])


async def delete_expired(db: Database, data_dir: str, limit: int = 100) -> int:
    """Delete files whose `expires_at` has passed, with their bytes; returns how many went."""
    async with db.transaction() as session:
        expired = list(
            (
                await session.scalars(
                    select(File)
                    .where(File.expires_at <= utcnow())
                    .order_by(File.expires_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
        )
        for row in expired:
            await session.delete(row)
    remove_bytes(data_dir, expired)
    return len(expired)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


async def sweep_leftovers(db: Database, data_dir: str, older_than: timedelta = LEFTOVER_AGE) -> int:
    """Delete what a crash left under DATA_DIR: spooled bodies, partial uploads, and stored
    bytes no `files` row names, all older than `older_than`; returns how many went."""
    stale = await asyncio.to_thread(_stale, Path(data_dir), (utcnow() - older_than).timestamp())
    stored = [path for path in stale if path.suffix == ""]
    named: set[str] = set()
    async with db.transaction() as session:
        for start in range(0, len(stored), 1000):
            ids = [path.name for path in stored[start : start + 1000]]
            named.update((await session.scalars(select(File.id).where(File.id.in_(ids)))).all())
    gone = [path for path in stale if path.name not in named]
    await asyncio.to_thread(_unlink_all, gone)
    return len(gone)


def _stale(root: Path, before: float) -> list[Path]:
    return [
        path
        for pattern in (f"{TEMP_DIR}/*.body", "files/*.part", "files/file-*")
        for path in root.glob(pattern)
        if path.is_file() and path.stat().st_mtime < before
    ]


def remove_bytes(data_dir: str, rows: Iterable[File]) -> None:
    """Delete the bytes of file objects whose rows were deleted (and committed: a failed commit
    must not leave rows without bytes). Bytes already gone are fine."""
    for row in rows:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(location(data_dir, row))


async def content(data_dir: str, file: File) -> AsyncIterator[bytes]:
    """The file's bytes, in chunks."""
    with location(data_dir, file).open("rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            yield chunk


def lines(data_dir: str, file: File) -> Iterator[bytes]:
    """The file's lines (for validation, run in a thread), one at a time."""
    with location(data_dir, file).open("rb") as source:
        yield from source
