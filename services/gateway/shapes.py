"""OpenAI response objects, built by small pure functions."""

from __future__ import annotations

import base64
import struct
from typing import TYPE_CHECKING, Any

from tiller.contract.results import InferenceResult, Usage

if TYPE_CHECKING:
    from tiller.gateway.background import Record


def usage(u: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }


def completion(
    request_id: str, model: str, created: int, result: InferenceResult
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        # The engine's own choices where the request passed parameters through (tool calls,
        # logprobs, several choices); otherwise the one text answer.
        "choices": result.choices
        or [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text, "refusal": None},
                "logprobs": None,
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": usage(result.usage),
        "system_fingerprint": None,
    }


def chunk(
    request_id: str,
    model: str,
    created: int,
    delta: dict[str, str],
    finish_reason: str | None = None,
    with_usage_field: bool = False,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if with_usage_field:  # with include_usage, every chunk carries "usage": null but the last
        body["usage"] = None
    return body


def engine_chunk(
    request_id: str,
    model: str,
    created: int,
    choices: list[dict[str, Any]],
    legacy: bool = False,
    with_usage_field: bool = False,
) -> dict[str, Any]:
    """A streamed chunk whose choices the engine wrote (pass-through parameters), under this
    request's id and model name."""
    body: dict[str, Any] = {
        "id": request_id,
        "object": "text_completion" if legacy else "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
    }
    if with_usage_field:
        body["usage"] = None
    return body


def text_completion(
    request_id: str, model: str, created: int, result: InferenceResult
) -> dict[str, Any]:
    """A (legacy) completion's answer: POST /v1/completions without stream."""
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": result.choices
        or [
            {
                "text": result.text,
                "index": 0,
                "logprobs": None,
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": usage(result.usage),
        "system_fingerprint": None,
    }


def text_chunk(
    request_id: str,
    model: str,
    created: int,
    text: str,
    finish_reason: str | None = None,
    with_usage_field: bool = False,
) -> dict[str, Any]:
    """One streamed piece of a (legacy) completion."""
    body: dict[str, Any] = {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
    }
    if with_usage_field:
        body["usage"] = None
    return body


def usage_chunk(
    request_id: str, model: str, created: int, u: Usage, legacy: bool = False
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "text_completion" if legacy else "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [],
        "usage": usage(u),
    }


def model_object(name: str, created: int, owned_by: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": owned_by}


def duration(seconds: float) -> str:
    """OpenAI's x-ratelimit-reset-* format: 20ms, 1.5s, 6m0s."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s"


def background(record: Record) -> dict[str, Any]:
    """A background request as `GET /v1/chat/completions/{id}` shows it: the completion once it
    is done, with a `status` (in_progress, completed, failed, cancelled) and any `error`."""
    if record.result is not None:
        body = completion(record.request_id, record.model, record.created, record.result)
    else:
        body = {
            "id": record.request_id,
            "object": "chat.completion",
            "created": record.created,
            "model": record.model,
        }
    body["status"] = record.status
    if record.error is not None:
        body["error"] = record.error.to_openai()["error"]
    return body


def embeddings(model: str, result: InferenceResult, encoding_format: str) -> dict[str, Any]:
    """POST /v1/embeddings' answer; base64 is the vector's little-endian float32 bytes."""
    vectors = result.embeddings or []
    data = [
        {"object": "embedding", "index": i, "embedding": _encoded(v, encoding_format)}
        for i, v in enumerate(vectors)
    ]
    tokens = result.usage.prompt_tokens
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encoded(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector
