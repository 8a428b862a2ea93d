"""OpenAI's Files API over the gateway's FileStore (file_store.py), so the official SDKs'
`client.files` works unchanged:

    POST   /v1/files                  upload (multipart/form-data: `file`, `purpose`)
    GET    /v1/files                  list (?purpose=&limit=&after=&order=)
    GET    /v1/files/{file_id}        the file object
    GET    /v1/files/{file_id}/content   its bytes
    DELETE /v1/files/{file_id}

A file belongs to the key that uploaded it (or whose batch wrote it): another key is told it
does not exist, unless that key is an admin's, which sees every file. A viewer key may read its
own (it has none) but neither upload nor delete.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tiller.common.errors import (
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    UnsupportedMediaType,
)
from tiller.common.parsing import whole_number
from tiller.gateway.callers import JSONResponse, bearer_key
from tiller.gateway.file_store import MAX_LIST, FileStore, StoredFile
from tiller.gateway.inference import Inference
from tiller.protos.quota.v1 import quota_pb2

# What callers may upload for (OpenAI's purposes); Tiller itself reads only "batch" files.
PURPOSES = ("batch", "fine-tune", "assistants", "vision", "user_data", "evals")
WRITERS = ("admin", "member")
# A form's boundaries, part headers and `purpose` field, on top of the file itself.
FORM_OVERHEAD = 64 * 1024


def _store(request: Request) -> FileStore:
    files: FileStore = request.app.state.files
    return files


async def _principal(request: Request, writes: bool = False) -> quota_pb2.Principal:
    inference: Inference = request.app.state.inference
    principal = await inference.authenticate(bearer_key(request.headers.get("authorization")))
    if writes and principal.role not in WRITERS:
        raise PermissionDenied(
            f"A key with the {principal.role} role may read files but not upload or delete them."
        )
    return principal


async def _owned(request: Request, principal: quota_pb2.Principal) -> StoredFile:
    """The file in the path, if the caller's key owns it (or is an admin's); else, as if it
    did not exist, NotFound."""
    file_id = request.path_params["file_id"]
    stored = await _store(request).get(file_id)
    if stored.owner != principal.key_id and principal.role != "admin":
        raise NotFound(f"No such File object: {file_id}", param="id")
    return stored


async def create_file(request: Request) -> Response:
    principal = await _principal(request, writes=True)
    inference: Inference = request.app.state.inference
    limit = inference.settings.files_max_bytes
    form = await _form(request, limit)
    try:  # the form's file is released before the content is sealed
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise InvalidRequest(
                "The file to upload is missing: send it as the form's `file` part, with a "
                "filename.",
                param="file",
            )
        if not isinstance(purpose, str) or purpose not in PURPOSES:
            raise InvalidRequest(
                f"`purpose` must be one of {', '.join(PURPOSES)}.",
                param="purpose",
            )
        if upload.size is not None and upload.size > limit:
            raise _too_large(limit)
        filename, data = upload.filename, await upload.read()
    finally:
        await form.close()
    if len(data) > limit:
        raise _too_large(limit)
    stored = await _store(request).put(principal.key_id, filename, purpose, data)
    return JSONResponse(stored.to_openai())


async def _form(request: Request, limit: int) -> FormData:
    """The upload's form, read no further than `limit` and the form's overhead."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "multipart/form-data":
        raise UnsupportedMediaType(
            "Upload a file as multipart/form-data, with the fields `file` and `purpose`.",
            param="Content-Type",
        )
    declared = request.headers.get("content-length")
    length = whole_number(declared) if declared else None
    if length is not None and length > limit + FORM_OVERHEAD:
        raise _too_large(limit)
    body = _bounded(request.stream(), limit + FORM_OVERHEAD, limit)
    parser = MultiPartParser(request.headers, body, max_files=1, max_fields=8)
    # Kept in memory: Starlette would spool a file past 1 MiB to a temporary file, in clear.
    parser.spool_max_size = limit + FORM_OVERHEAD
    try:
        return await parser.parse()
    except MultiPartException as error:
        raise InvalidRequest(f"The form could not be read: {error.message}") from None
    finally:
        await body.aclose()


async def _bounded(
    stream: AsyncIterator[bytes], most: int, limit: int
) -> AsyncGenerator[bytes, None]:
    seen = 0
    async for piece in stream:
        seen += len(piece)
        if seen > most:
            raise _too_large(limit)
        yield piece


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The file is larger than {limit} bytes, the most a file may hold.")


async def list_files(request: Request) -> Response:
    principal = await _principal(request)
    query = request.query_params
    given = query.get("limit")
    limit = MAX_LIST if given is None else whole_number(given)
    if limit is None or not 1 <= limit <= MAX_LIST:
        raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_LIST}.", param="limit")
    owner = None if principal.role == "admin" else principal.key_id
    page, has_more = await _store(request).list(
        owner, query.get("purpose"), limit, query.get("after"), query.get("order", "desc")
    )
    return JSONResponse(
        {
            "object": "list",
            "data": [f.to_openai() for f in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": has_more,
        }
    )


async def retrieve_file(request: Request) -> Response:
    stored = await _owned(request, await _principal(request))
    return JSONResponse(stored.to_openai())


async def file_content(request: Request) -> Response:
    stored = await _owned(request, await _principal(request))
    data = await _store(request).content(stored.id)
    media = "application/jsonl" if stored.filename.endswith(".jsonl") else None
    return Response(data, media_type=media or "application/octet-stream")


async def delete_file(request: Request) -> Response:
    stored = await _owned(request, await _principal(request, writes=True))
    await _store(request).delete(stored.id)
    return JSONResponse({"id": stored.id, "object": "file", "deleted": True})


ROUTES = [
    Route("/v1/files", create_file, methods=["POST"]),
    Route("/v1/files", list_files, methods=["GET"]),
    Route("/v1/files/{file_id}", retrieve_file, methods=["GET"]),
    Route("/v1/files/{file_id}", delete_file, methods=["DELETE"]),
    Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
]
