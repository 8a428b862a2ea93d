"""Adapter for engines that serve the OpenAI HTTP API: vLLM, llama.cpp, SGLang, Ollama, ours.

Streams `POST {endpoint}/chat/completions` (or `/completions` for a legacy completion) with
`stream_options.include_usage` (vLLM reports real token counts in the last chunk) and classifies
every failure at the boundary. To continue a
partial answer it sends that answer as an open final assistant message with vLLM's
`continue_final_message` (deployments declare `resume: continue` only where the engine has it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from tiller.common import tracing
from tiller.common.errors import (
    ContextLengthExceeded,
    EngineError,
    EngineRefusedCredentials,
    EngineUnavailable,
    EngineUnreachable,
    InvalidRequest,
    TillerError,
)
from tiller.contract.requests import PASSTHROUGH, Chat, Embedding, Message, Target, TextCompletion
from tiller.contract.results import Usage
from tiller.worker.adapters.base import (
    Completion,
    Delta,
    Embeddings,
    EngineAdapter,
    EngineRequest,
)
from tiller.worker.adapters.http_options import api_key

_RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
_CONTEXT_HINTS = ("context length", "context_length", "maximum context", "too many tokens")
_JSON = {"content-type": "application/json"}


class OpenAICompatibleAdapter(EngineAdapter):
    # vLLM, llama.cpp, SGLang and hosted APIs take these as OpenAI defines them; an engine
    # without one answers 400, which reaches the client as the engine's own reason.
    passthrough = frozenset(PASSTHROUGH)

    async def stream(self, request: EngineRequest) -> AsyncIterator[Delta]:
        body = orjson.dumps(_body(request, stream=True))
        try:
            async with self.resources.http.post(
                _url(request),
                data=body,
                headers=headers(request.target),
                timeout=engine_timeout(request.timeout_seconds),
            ) as response:
                if response.status != 200:
                    raise _status_error(response.status, await response.read())
                raw = bool(request.ask.extra)
                async for line in sse_lines(response):
                    delta = _parse_line(line, raw)
                    if delta is not None:
                        yield delta
        except (aiohttp.ClientError, TimeoutError) as error:
            raise transport_error(error, request.target) from None

    async def _post(self, request: EngineRequest, url: str, body: dict[str, Any]) -> bytes:
        """One whole-answer call; the body of a 200, else the classified error."""
        status, content, _ = await post_json(self.resources.http, request, url, body)
        if status != 200:
            raise _status_error(status, content)
        return content

    async def predict(self, request: EngineRequest) -> Completion:
        content = await self._post(request, _url(request), _body(request, stream=False))
        try:
            data = orjson.loads(content)
            choice = data["choices"][0]
            return Completion(
                text=(choice["message"].get("content") if "message" in choice else choice["text"])
                or "",
                finish_reason=choice.get("finish_reason") or "stop",
                usage=usage_of(data.get("usage")) or Usage(),
                choices=list(data["choices"]) if request.ask.extra else None,
            )
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            raise EngineError("The model engine returned a response Tiller cannot read.") from None

    async def embed(self, request: EngineRequest) -> Embeddings:
        assert isinstance(request.ask, Embedding)
        texts = list(request.ask.texts)
        body = {**request.ask.params, "model": request.target.engine_model, "input": texts}
        content = await self._post(request, f"{request.target.endpoint}/embeddings", body)
        try:
            data = orjson.loads(content)
            ordered = sorted(data["data"], key=lambda item: item["index"])
            vectors = [[float(x) for x in item["embedding"]] for item in ordered]
            usage = usage_of(data.get("usage")) or Usage()
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise EngineError("The model engine returned embeddings Tiller cannot read.") from None
        if len(vectors) != len(texts):
            raise EngineError("The model engine returned a different number of embeddings.")
        return Embeddings(vectors, usage.prompt_tokens)

    async def health(self, target: Target) -> bool:
        return await answers_get(self.resources.http, f"{target.endpoint}/models", target)


async def post_json(
    http: aiohttp.ClientSession, request: EngineRequest, url: str, body: dict[str, Any]
) -> tuple[int, bytes, dict[str, str]]:
    """POST a JSON body with the deployment's key and the attempt's timeout: the status, body
    and headers (names lower-cased) of the answer, or the transport failure classified."""
    try:
        async with http.post(
            url,
            data=orjson.dumps(body),
            headers=headers(request.target),
            timeout=engine_timeout(request.timeout_seconds),
        ) as response:
            answer_headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status, await response.read(), answer_headers
    except (aiohttp.ClientError, TimeoutError) as error:
        raise transport_error(error, request.target) from None


async def answers_get(http: aiohttp.ClientSession, url: str, target: Target) -> bool:
    """Whether GET `url` (with the deployment's key) answers 200 within 2 s: a health check.
    A 401 or 403 counts as an answer: the engine is up and refuses the key, which each request
    reports by name; ejecting it would turn a wrong key into "cannot reach the engine"."""
    try:
        async with http.get(
            url, headers=headers(target), timeout=aiohttp.ClientTimeout(total=2.0)
        ) as response:
            return response.status in (200, 401, 403)
    except (aiohttp.ClientError, TimeoutError, EngineError):
        return False


async def sse_lines(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The lines of a server-sent event stream. Whatever arrived in one read is split in one go:
    a fast engine's deltas reach the activity back to back, which publishes them as one event
    (coalescing); a line cut between reads waits for its end."""
    pending = b""
    async for data in response.content.iter_any():
        lines = (pending + data).split(b"\n")
        pending = lines.pop()
        for line in lines:
            yield line
    if pending:
        yield pending


def headers(target: Target) -> dict[str, str]:
    """JSON, and the deployment's API key (options.api_key_env / api_key_file) if it has one."""
    key = api_key(target.options)
    sent = dict(_JSON) if key is None else {**_JSON, "authorization": f"Bearer {key}"}
    tracing.inject(sent)  # the engine joins the request's trace (vLLM and TGI read traceparent)
    return sent


def _url(request: EngineRequest) -> str:
    path = "/completions" if isinstance(request.ask, TextCompletion) else "/chat/completions"
    return f"{request.target.endpoint}{path}"


def _body(request: EngineRequest, *, stream: bool) -> dict[str, Any]:
    sampling = request.sampling
    ask = request.ask
    # The engine's own parameters first: what Tiller sets itself takes precedence.
    body: dict[str, Any] = {**ask.params, "model": request.target.engine_model, "stream": stream}
    if isinstance(ask, TextCompletion):
        body["prompt"] = ask.prompt + request.partial
    elif isinstance(ask, Chat):
        body["messages"] = _messages(ask, request.partial)
    if stream:
        body["stream_options"] = {"include_usage": True}
    optional = {
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "seed": sampling.seed,
        "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty,
        "stop": sampling.stop or None,
    }
    body.update((k, v) for k, v in optional.items() if v is not None)
    body.update(ask.extra)
    if request.partial and isinstance(ask, Chat):
        # vLLM's prefill: the answer so far is an open final message the model continues.
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False
    return body


def _messages(chat: Chat, partial: str) -> list[dict[str, Any]]:
    messages = [message(m) for m in chat.messages]
    if partial:
        messages.append({"role": "assistant", "content": partial})
    return messages


def message(m: Message) -> dict[str, Any]:
    """A message as OpenAI's chat API takes it."""
    content = m.content
    # The message's other fields first: its known ones take precedence over anything alike.
    out: dict[str, Any] = {**m.extra, "role": m.role}
    out["content"] = [p.openai() for p in content] if isinstance(content, tuple) else content
    if m.name:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [c.openai() for c in m.tool_calls]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


def engine_timeout(total: float) -> aiohttp.ClientTimeout:
    # Connecting is quick or the engine is down; reading may wait for a long first token.
    return aiohttp.ClientTimeout(total=total, sock_connect=min(total, 3.0))


def _parse_line(line: bytes, raw: bool = False) -> Delta | None:
    """One line of the engine's server-sent events; None for anything but a data chunk.
    `raw`: keep the chunk's choices as the engine wrote them (pass-through parameters)."""
    if not line.startswith(b"data:"):
        return None
    payload = line[5:].strip()
    if not payload or payload == b"[DONE]":
        return None
    try:
        chunk = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise EngineError("The model engine sent a stream chunk that is not JSON.") from None
    if "error" in chunk:
        raise _engine_reported(chunk["error"])
    choices: list[dict[str, Any]] = chunk.get("choices") or []
    choice: dict[str, Any] = next((c for c in choices if c.get("index", 0) == 0), {})
    if "delta" in choice or "text" not in choice:
        text = (choice.get("delta") or {}).get("content") or ""
    else:  # a (legacy) completion's chunk
        text = choice["text"] or ""
    return Delta(
        text=text,
        finish_reason=choice.get("finish_reason"),
        usage=usage_of(chunk.get("usage")),
        choices=choices if raw and choices else None,
    )


def usage_of(data: dict[str, Any] | None) -> Usage | None:
    if not data:
        return None
    return Usage(int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0))


def _engine_reported(error: Any) -> TillerError:
    message = error.get("message") if isinstance(error, dict) else str(error)
    return EngineUnavailable(f"The model engine failed: {message}")


def _status_error(status: int, content: bytes) -> TillerError:
    try:
        message = str(orjson.loads(content)["error"]["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = content[:200].decode(errors="replace") or f"HTTP {status}"
    if status in (401, 403):
        # A hosted API may quote the key it refused: the client learns only that it was refused.
        return EngineRefusedCredentials(
            f"The model engine refused Tiller's credentials ({status})."
        )
    if status in _RETRYABLE_STATUS:
        return EngineUnavailable(f"The model engine answered {status}: {message}")
    if status in (400, 422):
        if any(hint in message.lower() for hint in _CONTEXT_HINTS):
            return ContextLengthExceeded(message, param="messages")
        return InvalidRequest(f"The model engine rejected the request: {message}")
    return EngineError(f"The model engine answered {status}: {message}")


def transport_error(error: aiohttp.ClientError | TimeoutError, target: Target) -> TillerError:
    if unreachable(error):
        return EngineUnreachable(
            f"Cannot reach the model engine for deployment {target.deployment!r}."
        )
    if isinstance(error, TimeoutError):
        return EngineUnavailable(
            f"The model engine for deployment {target.deployment!r} timed out."
        )
    return EngineUnavailable(
        f"The connection to the model engine for deployment {target.deployment!r} broke."
    )


def unreachable(error: aiohttp.ClientError | TimeoutError) -> bool:
    """Whether the request never reached the engine: refused, no route, a connect timeout, a
    name that does not resolve. Not a TLS failure (a misconfiguration, not an outage), and not
    a connection that broke after it was made (the engine may have begun the request)."""
    if isinstance(error, aiohttp.ClientSSLError):
        return False
    return isinstance(error, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
