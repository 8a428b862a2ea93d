"""A batch's input lines: read, validated as OpenAI specifies (each a JSON object with a unique
`custom_id`, `method` POST, the batch's `url`, and a `body` the endpoint itself would accept),
and the output and error lines their answers become."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from tiller.common.errors import InvalidRequest, TillerError
from tiller.contract.results import InferenceResult
from tiller.gateway import shapes
from tiller.gateway.protocol import (
    ApiRequest,
    EncodingFormat,
    parse_chat,
    parse_completion,
    parse_embeddings,
)
from tiller.gateway.responses_protocol import Asked, parse_response_request
from tiller.gateway.responses_shapes import with_model
from tiller.gateway.responses_store import RESPONSE_ID_PREFIX, Stored

MAX_LINES = 50_000  # OpenAI's limit of requests per batch
MAX_ERRORS_LISTED = 100  # in the batch object's `errors` (the error file names every bad line)


@dataclass(frozen=True)
class Line:
    """One validated line: what it asks, and how its answer is shaped."""

    number: int  # in the file, from 1
    custom_id: str
    request: ApiRequest
    encoding: EncodingFormat = "float"  # embeddings
    asked: Asked | None = None  # responses
    id_prefix: str | None = None

    def body(self, request_id: str, model: str, created: int, result: InferenceResult) -> Any:
        """The endpoint's answer, as it would have been sent to a live caller."""
        if self.asked is not None:
            envelope = with_model(dataclasses.replace(self.asked.envelope, store=False), model)
            stored = Stored(request_id, "", created, envelope, self.asked.messages)
            stored.ended(result)
            return stored.object()
        if self.id_prefix == "embd":
            return shapes.embeddings(model, result, self.encoding)
        if self.id_prefix == "cmpl":
            return shapes.text_completion(request_id, model, created, result)
        return shapes.completion(request_id, model, created, result)


def numbered(data: bytes) -> list[tuple[int, bytes]]:
    """The file's non-blank lines, with their numbers (from 1)."""
    return [(n, line) for n, line in enumerate(data.split(b"\n"), 1) if line.strip()]


def parse_line(number: int, raw: bytes, endpoint: str) -> Line:
    """One line, validated; InvalidRequest names what is wrong with it."""
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest(f"Line {number} is not valid JSON.") from None
    if not isinstance(item, dict):
        raise InvalidRequest(f"Line {number} is not a JSON object.")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise InvalidRequest(f"Line {number} has no `custom_id` (a string).", param="custom_id")
    if len(custom_id) > 512:
        raise InvalidRequest(
            f"Line {number}'s `custom_id` is over 512 characters.", param="custom_id"
        )
    if item.get("method") != "POST":
        raise InvalidRequest(f"Line {number}'s `method` must be POST.", param="method")
    if item.get("url") != endpoint:
        raise InvalidRequest(
            f"Line {number}'s `url` must be the batch's endpoint, {endpoint}.", param="url"
        )
    body = item.get("body")
    if not isinstance(body, dict):
        raise InvalidRequest(f"Line {number} has no `body` (a JSON object).", param="body")
    for name in ("stream", "background"):
        if body.get(name):
            raise InvalidRequest(
                f"Line {number}: '{name}' is not supported in a batch.", param=name
            )
    try:
        line = _PARSERS[endpoint](body)
    except InvalidRequest as error:
        where = f"body.{error.param}" if error.param else "body"
        raise InvalidRequest(f"Line {number}: {error.message}", param=where) from None
    return dataclasses.replace(line, number=number, custom_id=custom_id)


def _chat(body: dict[str, Any]) -> Line:
    return Line(0, "", parse_chat(body), id_prefix="chatcmpl")


def _completion(body: dict[str, Any]) -> Line:
    return Line(0, "", parse_completion(body), id_prefix="cmpl")


def _embeddings(body: dict[str, Any]) -> Line:
    request, encoding = parse_embeddings(body)
    return Line(0, "", request, encoding=encoding, id_prefix="embd")


def _response(body: dict[str, Any]) -> Line:
    asked = parse_response_request(body)
    if asked.envelope.previous_response_id:
        raise InvalidRequest(
            "'previous_response_id' is not supported in a batch: each line stands alone.",
            param="previous_response_id",
        )
    return Line(0, "", asked.chat(()), asked=asked, id_prefix=RESPONSE_ID_PREFIX)


_PARSERS: dict[str, Callable[[dict[str, Any]], Line]] = {
    "/v1/chat/completions": _chat,
    "/v1/completions": _completion,
    "/v1/embeddings": _embeddings,
    "/v1/responses": _response,
}


@dataclass
class Validation:
    """The whole file checked: how many lines, and what is wrong with which."""

    total: int = 0
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    error_lines: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # The models the valid lines name: each with its lines' numbers and custom_ids.
    models: dict[str, list[tuple[int, str]]] = dataclasses.field(default_factory=dict)

    def refuse(self, number: int, custom_id: Any, code: str, error: TillerError) -> None:
        entry = {"code": code, "message": error.message, "param": error.param, "line": number}
        if len(self.errors) < MAX_ERRORS_LISTED:
            self.errors.append(entry)
        self.error_lines.append(
            {
                "id": None,
                "custom_id": custom_id if isinstance(custom_id, str) else None,
                "response": None,
                "error": entry,
            }
        )

    def in_order(self) -> None:
        """Errors by line number (refusals found later, such as unknown models, come last)."""
        self.errors.sort(key=lambda e: int(e["line"]))
        self.error_lines.sort(key=lambda e: int(e["error"]["line"]))


def validate(data: bytes, endpoint: str) -> Validation:
    """Every line of the input file, checked; the batch runs only if none is wrong."""
    lines = numbered(data)
    checked = Validation(total=len(lines))
    if not lines:
        checked.refuse(0, None, "empty_file", InvalidRequest("The input file has no lines."))
        return checked
    if len(lines) > MAX_LINES:
        refusal = InvalidRequest(f"The input file has {len(lines)} lines; at most {MAX_LINES}.")
        checked.refuse(0, None, "too_many_lines", refusal)
        return checked
    seen: dict[str, int] = {}
    for number, raw in lines:
        try:
            line = parse_line(number, raw, endpoint)
        except InvalidRequest as error:
            checked.refuse(number, _custom_id(raw), "invalid_request", error)
            continue
        checked.models.setdefault(line.request.model, []).append((number, line.custom_id))
        first = seen.setdefault(line.custom_id, number)
        if first != number:
            refusal = InvalidRequest(
                f"Line {number}'s `custom_id` is the same as line {first}'s; each must be unique.",
                param="custom_id",
            )
            checked.refuse(number, line.custom_id, "duplicate_custom_id", refusal)
    return checked


def _custom_id(raw: bytes) -> Any:
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return item.get("custom_id") if isinstance(item, dict) else None


def output_line(line: Line, request_id: str, body: Any) -> dict[str, Any]:
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": line.custom_id,
        "response": {"status_code": 200, "request_id": request_id, "body": body},
        "error": None,
    }


def error_line(line: Line, error: TillerError) -> dict[str, Any]:
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": line.custom_id,
        "response": {
            "status_code": error.http_status,
            "request_id": error.request_id or "",
            "body": error.to_openai(),
        },
        "error": {"code": error.openai_code or error.reason, "message": error.message},
    }
