"""A multipart/form-data upload read as it arrives: the small fields before the file, then the
file's bytes as a stream handed straight to the file store (never the whole body in memory), then
the fields after it.

Litestar's own form parsing would spool the file first; this uses the same parser (`multipart`,
a Litestar dependency) in push mode instead. The fields may come before or after the file (the
SDKs send `purpose` first, local-batch-api's curl example sends the file first), so every field
is in `fields` once the file's bytes have been read to their end.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeAlias

from multipart import MultipartSegment, ParserError, ParserLimitReached, PushMultipartParser

from app.api.openai.errors import invalid

FIELD_MAX_BYTES = 64 * 1024
MAX_PARTS = 32
# What the parser yields: a part's headers, a piece of its body, or None where the part ends.
Event: TypeAlias = MultipartSegment | bytes | bytearray | None


class Upload:
    """One form being read: `fields` holds its small fields, `filename` the file's name."""

    def __init__(self, body: AsyncIterator[bytes], boundary: str, file_field: str = "file") -> None:
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self._file_field = file_field
        self._parts = self._parse(body, boundary)

    async def _parse(self, body: AsyncIterator[bytes], boundary: str) -> AsyncGenerator[Event, None]:
        try:
            with PushMultipartParser(boundary, max_segment_count=MAX_PARTS) as parser:
                async for chunk in body:
                    for part in parser.parse(chunk):
                        yield part
                for part in parser.parse(b""):
                    yield part
        except ParserLimitReached as exc:
            raise invalid("invalid_multipart", f"The form has too many parts: {exc}") from None
        except ParserError as exc:
            raise invalid("invalid_multipart", f"The multipart/form-data body is invalid: {exc}") from None

    async def until_file(self) -> bool:
        """Read the fields up to the file; True when the file comes next, False if it never does."""
        return await self._fields(stop_at_file=True)

    async def _fields(self, stop_at_file: bool) -> bool:
        """Read fields into `fields`; stop at the file part when asked (True). A file part met
        otherwise (a second one) is skipped, its bytes not kept."""
        name, value = None, bytearray()
        async for part in self._parts:
            if isinstance(part, MultipartSegment):
                name, value = part.name, bytearray()
                if part.name == self._file_field and part.filename is not None:
                    if stop_at_file:
                        self.filename = part.filename or "upload"
                        return True
                    name = None
            elif part is not None:
                if name is None:
                    continue
                value.extend(part)
                if len(value) > FIELD_MAX_BYTES:
                    raise invalid("invalid_multipart", f"Form field {name!r} is too long.", name)
            elif name is not None:
                self.fields[name] = value.decode("utf-8", errors="replace")
                name = None
        return False

    async def file_bytes(self) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive, then the fields after it read into `fields`."""
        async for part in self._parts:
            if part is None:
                break
            if not isinstance(part, MultipartSegment):
                yield bytes(part)
        await self._fields(stop_at_file=False)

    async def close(self) -> None:
        """Stop reading (an early refusal leaves the rest of the body unread)."""
        await self._parts.aclose()
