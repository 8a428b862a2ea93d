"""Temporal's remote codec protocol, for on-call with an admin key: what Temporal stores is
sealed (common/payload_codec.py); these open it (and seal, for a payload typed into the UI).

    temporal workflow show --workflow-id chatcmpl-... \
      --codec-endpoint http://127.0.0.1:8080/admin/codec --codec-auth "Bearer $TILLER_ADMIN_KEY"

POST /admin/codec/decode and /admin/codec/encode take and return `{"payloads": [...]}` in
protobuf JSON (Temporal's `Payloads`). Payloads are never logged. Under a masking policy
(pii.md) what they open holds placeholders: the prompt's personal data is not in Temporal even
sealed.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

from tiller.common.errors import InvalidRequest, ServiceUnavailable
from tiller.common.payload_codec import PayloadKeyError
from tiller.gateway.admin_api import caller_with_role, inference_of
from tiller.gateway.callers import JSONResponse, read_json

CODEC_BODY_BYTES = 8 * 1024 * 1024  # a workflow's history page of payloads


async def decode(request: Request) -> Response:
    return await _apply(request, "decode")


async def encode(request: Request) -> Response:
    return await _apply(request, "encode")


async def _apply(request: Request, direction: str) -> Response:
    await caller_with_role(request, "admin")
    body: Any = await read_json(request, CODEC_BODY_BYTES)
    try:
        _strict_base64(body)
        payloads = json_format.ParseDict(body, Payloads())
    except (json_format.ParseError, TypeError, ValueError) as error:
        raise InvalidRequest(f"Expected Temporal's Payloads as JSON: {error}") from None
    codec = _codec(request)
    try:
        if direction == "decode":
            done = await codec.decode(payloads.payloads)
        else:
            done = await codec.encode(payloads.payloads)
    except PayloadKeyError as error:
        raise InvalidRequest(str(error), param="payloads") from None
    return JSONResponse(json_format.MessageToDict(Payloads(payloads=done)))


def _strict_base64(body: Any) -> None:
    """Refuse what is not base64 where Payloads hold bytes (protobuf's JSON parser reads what
    it can of bad base64 and drops the rest, which would answer garbage with a 200)."""
    payloads = body.get("payloads") if isinstance(body, dict) else None
    for index, payload in enumerate(payloads if isinstance(payloads, list) else ()):
        if not isinstance(payload, dict):
            continue
        metadata = payload.get("metadata")
        values = list(metadata.values()) if isinstance(metadata, dict) else []
        for value in [payload.get("data", ""), *values]:
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError, TypeError):
                raise ValueError(f"payloads[{index}] holds bytes that are not base64") from None


def _codec(request: Request) -> PayloadCodec:
    codec = inference_of(request).up.temporal.data_converter.payload_codec
    if codec is None:  # pragma: no cover - the gateway does not start without payload keys
        raise ServiceUnavailable("This gateway has no payload keys.")
    return codec


ROUTES = [
    Route("/admin/codec/decode", decode, methods=["POST"]),
    Route("/admin/codec/encode", encode, methods=["POST"]),
]
