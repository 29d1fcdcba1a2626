"""/v1/files: upload (streamed to DATA_DIR), list, read, download and delete file objects."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream

from app.api.openai.errors import documented_errors, invalid
from app.api.openai.schemas import FileDeletedOut, FileListOut, FileOut, file_out
from app.api.openai.upload import Upload
from app.core.dropin import file_store
from app.web.auth import caller_of
from app.web.http import HttpRequest
from app.web.state import app_state

# OpenAI's limit for a batch input file; the route allows a little more for the form around it.
UPLOAD_MAX_BYTES = 200 * 1024 * 1024
FORM_OVERHEAD_BYTES = 1024 * 1024
NO_SUCH_FILE = {404: "No such file"}


class FileController(Controller):
    path = "/files"
    tags = ["openai"]

    @post(
        "/",
        status_code=200,
        summary="Upload a file (multipart: purpose and file, in either order)",
        request_max_body_size=UPLOAD_MAX_BYTES + FORM_OVERHEAD_BYTES,
        responses=documented_errors(
            {
                400: "Not a multipart/form-data upload, no file part, a bad purpose or expires_after, "
                "or a filename longer than 255 characters or holding a NUL",
                413: "File too large",
            }
        ),
    )
    async def upload(self, request: HttpRequest, state: State) -> FileOut:
        app = app_state(state)
        caller = caller_of(request)
        media_type, options = request.content_type
        if media_type != "multipart/form-data" or not options.get("boundary"):
            raise invalid("invalid_content_type", "Upload the file as multipart/form-data.")
        upload = Upload(request.stream(), options["boundary"])
        try:
            if not await upload.until_file():
                raise invalid("missing_required_parameter", "The form has no file part.", "file")
            # What came before the file is checked now, before a byte is written; what follows it
            # (local-batch-api's curl sends the purpose after the file) once the file is on disk.
            file_store.upload_terms(upload.fields, complete=False)
            settings = await app.effective.fresh()
            stored = await file_store.receive(
                app.db,
                settings.data_dir,
                upload.file_bytes(),
                filename=upload.filename or "upload",
                max_bytes=UPLOAD_MAX_BYTES,
                terms=lambda: file_store.upload_terms(upload.fields),
                owner=caller.owner,
            )
        finally:
            await upload.close()
        return file_out(stored)

    @get("/", summary="Files, newest first by default", responses=documented_errors())
    async def list(
        self,
        request: HttpRequest,
        state: State,
        purpose: FromQuery[str | None] = None,
        after: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=10_000)] = 10_000,
        order: FromQuery[Literal["asc", "desc"]] = "desc",
    ) -> FileListOut:
        rows, has_more = await file_store.page(
            app_state(state).db,
            caller_of(request),
            purpose=purpose,
            limit=limit,
            after=after,
            newest_first=order == "desc",
        )
        data = [file_out(f) for f in rows]
        return FileListOut(data, data[0].id if data else None, data[-1].id if data else None, has_more)

    @get("/{file_id:str}", summary="A file object", responses=documented_errors(NO_SUCH_FILE))
    async def read(self, request: HttpRequest, file_id: FromPath[str], state: State) -> FileOut:
        return file_out(await file_store.get(app_state(state).db, file_id, caller_of(request)))

    @get(
        "/{file_id:str}/content",
        summary="A file's bytes",
        media_type="application/octet-stream",
        responses=documented_errors(NO_SUCH_FILE),
    )
    async def content(self, request: HttpRequest, file_id: FromPath[str], state: State) -> Stream:
        app = app_state(state)
        found = await file_store.get(app.db, file_id, caller_of(request))
        settings = await app.effective.fresh()
        return Stream(file_store.content(settings.data_dir, found), media_type="application/octet-stream")

    @delete(
        "/{file_id:str}",
        status_code=200,
        summary="Delete a file and its bytes",
        responses=documented_errors(NO_SUCH_FILE),
    )
    async def remove(self, request: HttpRequest, file_id: FromPath[str], state: State) -> FileDeletedOut:
        app = app_state(state)
        settings = await app.effective.fresh()
        await file_store.delete(app.db, settings.data_dir, file_id, caller_of(request))
        return FileDeletedOut(file_id)
