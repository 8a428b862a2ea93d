"""Boundary classification of the OpenAI-compatible adapter: engine statuses and stream lines."""

from __future__ import annotations

from types import SimpleNamespace

import aiohttp
import orjson
import pytest

from tiller.common.errors import (
    ContextLengthExceeded,
    EngineError,
    EngineRefusedCredentials,
    EngineUnavailable,
    EngineUnreachable,
    InvalidRequest,
    TillerError,
)
from tiller.contract.requests import Target
from tiller.contract.results import Usage
from tiller.worker.adapters import openai_compatible as adapter
from tiller.worker.adapters.base import Delta


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": {"message": message}})


@pytest.mark.parametrize(
    ("status", "message", "kind", "retryable"),
    [
        (503, "overloaded", EngineUnavailable, True),
        (429, "too many requests", EngineUnavailable, True),
        (500, "boom", EngineUnavailable, True),
        (400, "This model's maximum context length is 4096 tokens.", ContextLengthExceeded, False),
        (400, "temperature must be positive", InvalidRequest, False),
        (404, "The model `x` does not exist.", EngineError, False),
    ],
)
def test_status_codes_are_classified(
    status: int, message: str, kind: type, retryable: bool
) -> None:
    error = adapter._status_error(status, error_body(message))
    assert type(error) is kind and error.retryable is retryable
    assert message in error.message


def test_stream_lines_become_typed_deltas() -> None:
    line = b'data: {"choices":[{"delta":{"content":"Hi"},"finish_reason":null}]}\r'
    assert adapter._parse_line(line) == Delta(text="Hi")
    last = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}'
    assert adapter._parse_line(last) == Delta(usage=Usage(3, 2))
    assert adapter._parse_line(b"data: [DONE]") is None
    assert adapter._parse_line(b": ping") is None
    assert adapter._parse_line(b"") is None


def test_a_body_that_is_not_an_openai_error_is_quoted() -> None:
    error = adapter._status_error(502, b"<html>Bad Gateway</html>")
    assert type(error) is EngineUnavailable and "<html>Bad Gateway" in error.message


def test_an_error_inside_the_stream_is_raised() -> None:
    with pytest.raises(TillerError, match="engine failed: oom"):
        adapter._parse_line(b'data: {"error": {"message": "oom"}}')
    with pytest.raises(EngineError):
        adapter._parse_line(b"data: {not json")


def test_a_refused_key_is_not_quoted_to_the_client() -> None:
    body = error_body("Incorrect API key provided: sk-proj-abcd1234. Find yours at ...")
    for status in (401, 403):
        error = adapter._status_error(status, body)
        assert type(error) is EngineRefusedCredentials and "sk-" not in error.message
        assert f"refused Tiller's credentials ({status})" in error.message


def _connect_error(kind: type[aiohttp.ClientConnectorError], os_error: OSError) -> Exception:
    key = SimpleNamespace(host="engine", port=8000, ssl=True, is_ssl=False)
    return kind(key, os_error)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "kind"),
    [  # nothing reached the engine: where there is nowhere else to go, the request waits
        (
            _connect_error(aiohttp.ClientConnectorError, ConnectionRefusedError(111, "refused")),
            EngineUnreachable,
        ),
        (
            _connect_error(aiohttp.ClientConnectorDNSError, OSError(-2, "no such name")),
            EngineUnreachable,
        ),
        (aiohttp.ConnectionTimeoutError("connect timed out"), EngineUnreachable),
        # the engine may have begun the request: an ordinary retryable attempt
        (aiohttp.ServerDisconnectedError(), EngineUnavailable),
        (aiohttp.ClientPayloadError("cut mid-stream"), EngineUnavailable),
        (aiohttp.SocketTimeoutError("read timed out"), EngineUnavailable),
        (TimeoutError(), EngineUnavailable),
    ],
    ids=["refused", "dns", "connect-timeout", "disconnected", "payload", "read-timeout", "total"],
)
def test_transport_failures_say_whether_the_engine_was_reached(
    error: aiohttp.ClientError | TimeoutError, kind: type[TillerError]
) -> None:
    classified = adapter.transport_error(error, Target("d", "openai", "http://e/v1", "m", "q"))
    assert type(classified) is kind and classified.retryable
    assert "'d'" in classified.message
