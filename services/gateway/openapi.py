"""The REST API's contract as an OpenAPI 3.1 document (`GET /openapi.json`), written from the
same pydantic models that validate requests (protocol.py, responses_protocol.py), so what it
says a request may hold is what the gateway takes.

Fields a model leaves open (a message's `content`, `stop`, an embedding's `input`) are checked
by validators the schema cannot express; the document says their shapes in words and tools that
generate requests from it (the fuzz tier, tests/fuzz/) reach them anyway.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel

from tiller.gateway.batches.shared import ENDPOINTS
from tiller.gateway.file_store import MAX_LIST, ORDERS
from tiller.gateway.files_api import PURPOSES
from tiller.gateway.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingsRequest
from tiller.gateway.responses_protocol import ResponsesRequest

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
# What every answer of an inference endpoint may be besides its success.
ERRORS = {
    str(status): {
        "description": why,
        "headers": {"x-request-id": {"schema": {"type": "string"}}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for status, why in (
        (400, "invalid request, naming its param"),
        (401, "no key, or a key that is unknown, revoked or expired"),
        (403, "the key may not do this"),
        (404, "no such model, or no such stored object"),
        (413, "the body is larger than the gateway takes"),
        (415, "the body is not sent as JSON"),
        (429, "over a limit: Retry-After says when to try again"),
        (499, "the caller left before its answer began"),
        (500, "a fault on Tiller's side"),
        (502, "the engine answered something Tiller cannot use"),
        (503, "an engine or a dependency is unavailable: try again"),
        (504, "the request did not finish in time"),
    )
}
OBJECT = {"type": "object"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _inference(
    model: type[BaseModel], summary: str, streams: bool, operation: str
) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": OBJECT}}
    if streams:
        content["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "post": {
            "operationId": operation,
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "the answer (a stream with `stream: true`)",
                    **{
                        "content": content,
                        "headers": {"x-request-id": {"schema": {"type": "string"}}},
                    },
                },
                **ERRORS,
            },
        }
    }


def _read(summary: str, operation: str, method: str = "get") -> dict[str, Any]:
    return {
        method: {
            "operationId": operation,
            "summary": summary,
            "responses": {"200": _json(OBJECT, "the object"), **ERRORS},
        }
    }


def _with_id(name: str, paths: dict[str, Any]) -> dict[str, Any]:
    parameter = {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
    for operation in paths.values():
        operation["parameters"] = [parameter]
    return paths


def _files() -> dict[str, Any]:
    """/v1/files (files_api.py): an upload is a form, content is bytes."""
    upload = {
        "type": "object",
        "required": ["file", "purpose"],
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "purpose": {"type": "string", "enum": list(PURPOSES)},
        },
    }
    listing = _read("List this key's files", "listFiles")
    limit = {"type": "integer", "minimum": 1, "maximum": MAX_LIST}
    listing["get"]["parameters"] = [
        {"name": "purpose", "in": "query", "schema": {"type": "string"}},
        {"name": "limit", "in": "query", "schema": limit},
        {"name": "after", "in": "query", "schema": {"type": "string"}},
        {"name": "order", "in": "query", "schema": {"type": "string", "enum": list(ORDERS)}},
    ]
    binary = {"schema": {"type": "string", "format": "binary"}}
    content = {
        "operationId": "downloadFile",
        "summary": "A file's content",
        "responses": {
            "200": {
                "description": "the file's bytes",
                "content": {"application/octet-stream": binary, "application/jsonl": binary},
            },
            **ERRORS,
        },
    }
    return {
        "/v1/files": {
            "post": {
                "operationId": "createFile",
                "summary": "Upload a file",
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": upload}},
                },
                "responses": {"200": _json(OBJECT, "the file object"), **ERRORS},
            },
            **listing,
        },
        "/v1/files/{file_id}": _with_id(
            "file_id",
            {
                **_read("Retrieve a file", "retrieveFile"),
                **_read("Delete a file", "deleteFile", "delete"),
            },
        ),
        "/v1/files/{file_id}/content": _with_id("file_id", {"get": content}),
    }


def _batches() -> dict[str, Any]:
    """/v1/batches (batches/api.py)."""
    create = {
        "type": "object",
        "required": ["input_file_id", "endpoint", "completion_window"],
        "properties": {
            "input_file_id": {"type": "string"},
            "endpoint": {"type": "string", "enum": list(ENDPOINTS)},
            "completion_window": {"type": "string", "enum": ["24h"]},
            "metadata": {
                "type": ["object", "null"],
                "additionalProperties": {"type": "string", "maxLength": 512},
                "maxProperties": 16,
            },
        },
    }
    listing = _read("List this key's batches, newest first", "listBatches")
    listing["get"]["parameters"] = [
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        {"name": "after", "in": "query", "schema": {"type": "string"}},
    ]
    return {
        "/v1/batches": {
            "post": {
                "operationId": "createBatch",
                "summary": "Create a batch from an uploaded file of requests",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": create}},
                },
                "responses": {"200": _json(OBJECT, "the batch object"), **ERRORS},
            },
            **listing,
        },
        "/v1/batches/{batch_id}": _with_id("batch_id", _read("Retrieve a batch", "getBatch")),
        "/v1/batches/{batch_id}/cancel": _with_id(
            "batch_id", _read("Cancel a batch", "cancelBatch", "post")
        ),
    }


@cache
def document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        ChatCompletionRequest,
        CompletionRequest,
        EmbeddingsRequest,
        ResponsesRequest,
    ]
    schemas: dict[str, Any] = {"Error": ERROR}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    paths: dict[str, Any] = {
        "/v1/chat/completions": _inference(
            ChatCompletionRequest, "Create a chat completion", True, "createChatCompletion"
        ),
        "/v1/completions": _inference(
            CompletionRequest, "Create a (legacy) completion", True, "createCompletion"
        ),
        "/v1/embeddings": _inference(
            EmbeddingsRequest, "Create embeddings", False, "createEmbedding"
        ),
        "/v1/responses": _inference(ResponsesRequest, "Create a response", True, "createResponse"),
        "/v1/responses/{response_id}": _with_id(
            "response_id",
            {
                **_read("Retrieve a stored response", "getResponse"),
                **_read("Delete a stored response", "deleteResponse", "delete"),
            },
        ),
        "/v1/responses/{response_id}/cancel": _with_id(
            "response_id", _read("Cancel a background response", "cancelResponse", "post")
        ),
        "/v1/chat/completions/{request_id}": _with_id(
            "request_id", _read("Retrieve a background chat completion", "getCompletion")
        ),
        "/v1/chat/completions/{request_id}/cancel": _with_id(
            "request_id",
            _read("Cancel a background chat completion", "cancelCompletion", "post"),
        ),
        "/v1/models": _read("List the models this key may use", "listModels"),
        "/v1/models/{model}": _with_id("model", _read("Retrieve a model", "getModel")),
        "/v1/usage": _read("This key's usage", "getUsage"),
        **_files(),
        **_batches(),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tiller",
            "version": "1",
            "description": "An OpenAI-compatible gateway in front of model-serving engines.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
