"""`/v1/batches` over REST, as OpenAI's Batch API: create, retrieve, list and cancel. A batch is
its caller key's (an admin key sees every batch); a viewer may read but not create or cancel."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tiller.common.errors import InvalidRequest
from tiller.common.parsing import whole_number
from tiller.gateway.admin_api import caller_with_role
from tiller.gateway.batches.service import Batches
from tiller.gateway.callers import JSONResponse, read_json
from tiller.protos.quota.v1.quota_pb2 import Principal

MAX_LIST = 100


async def _caller(request: Request, role: str | None = None) -> tuple[Batches, Principal]:
    """The batches, and the caller's principal (PermissionDenied unless it has `role`)."""
    principal = await caller_with_role(request, role)
    batches: Batches = request.app.state.batches
    return batches, principal


async def create_batch(request: Request) -> Response:
    batches, principal = await _caller(request, "member")  # a viewer may read, not create
    body = await read_json(request, batches.inference.settings.max_body_bytes)
    batch = await batches.create(principal.key_id, body)
    return JSONResponse(batch.to_openai())


async def retrieve_batch(request: Request) -> Response:
    batches, principal = await _caller(request)
    batch_id = request.path_params["batch_id"]
    batch = await batches.get(batch_id, principal.key_id, principal.role == "admin")
    return JSONResponse(batch.to_openai())


async def cancel_batch(request: Request) -> Response:
    batches, principal = await _caller(request, "member")
    batch_id = request.path_params["batch_id"]
    batch = await batches.cancel(batch_id, principal.key_id, principal.role == "admin")
    return JSONResponse(batch.to_openai())


async def list_batches(request: Request) -> Response:
    batches, principal = await _caller(request)
    raw_limit = request.query_params.get("limit", "20")
    limit = whole_number(raw_limit)
    if limit is None or not 1 <= limit <= MAX_LIST:
        raise InvalidRequest(f"'limit' must be a whole number from 1 to {MAX_LIST}.", param="limit")
    after = request.query_params.get("after") or None
    found = await batches.list(principal.key_id, principal.role == "admin", after, limit + 1)
    page = [b.to_openai() for b in found[:limit]]
    return JSONResponse(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(found) > limit,
        }
    )


ROUTES = [
    Route("/v1/batches", create_batch, methods=["POST"]),
    Route("/v1/batches", list_batches, methods=["GET"]),
    Route("/v1/batches/{batch_id}", retrieve_batch, methods=["GET"]),
    Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
]
