"""Adapter for Hugging Face text-generation-inference (TGI).

A chat request goes to TGI's Messages API, `POST {endpoint}/v1/chat/completions` (OpenAI-shaped,
streamed as server-sent events with `stream_options.include_usage`). A (legacy) completion of a
`prompt` goes to TGI's own API: `POST {endpoint}/generate` for the whole answer, and
`/generate_stream`, whose events carry one token each and, on the last, the finish reason and
token counts (`details`). The endpoint is TGI's base URL; a trailing `/v1` is dropped.

What TGI does differently from OpenAI, and what is done about it here:
- It refuses `temperature` 0 and `top_p` outside (0, 1) on its own API ("must be strictly
  positive"). Temperature 0 (or top_p 0) is greedy decoding: `do_sample` false with neither set;
  top_p 1 means no nucleus cut, so it is left out (the Messages API refuses top_p 1 too).
- It answers errors as `{"error": "...", "error_type": "..."}`: 422 validation (an over-long
  input is ContextLengthExceeded), 424 a failure during generation, 429 overloaded, 500 an
  incomplete generation. A stream reports them as an event instead, even before its first token
  (the HTTP status is then 200); since TGI 2.4 (PR #2668) the Messages API may send them shaped
  for OpenAI's client, `{"error": {"message": ..., "http_status_code": ...}}`. Both are read.
- Its finish reasons are `length`, `eos_token` and `stop_sequence` (older Messages APIs pass them
  on as they are): they become `length`, `stop` and `stop`.
- The text it returns ends with the stop sequence that stopped it; OpenAI's does not, so the
  adapter cuts it off (streaming holds back the last few characters until the end to do so).
- The Messages API turns `presence_penalty` into `repetition_penalty = presence_penalty + 2`, so
  0, which means no penalty, is not sent; its own API has no presence penalty at all.
- Without `max_tokens` TGI applies its own default length (`max_new_tokens` 100 in its API
  schema): a model's `defaults.max_tokens` in models.yaml sets another.
- `n` is unused by the Messages API (one choice whatever it asks), so only n = 1 is taken.

Pass-through parameters (`EngineRequest.extra`): tools, tool_choice, logprobs and top_logprobs go
to the Messages API as they are, and its choices come back as it wrote them (finish reasons in
OpenAI's words); `response_format` with a JSON schema becomes TGI's grammar, for both APIs. A
completion (TGI's own API) refuses the others, naming them.

To continue a partial answer: a completion sends prompt + partial as `inputs`; a chat sends the
partial as a final assistant message, which TGI 2.4.1 and later continue rather than answer
(TGI PR #2733; its template rendering then drops trailing whitespace of that message, so a
partial answer ending in a space may be continued with another). Older TGI starts a new turn
instead: such deployments keep `resume: none` (the default for `tgi`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

import aiohttp
import orjson

from tiller.common.errors import (
    ContextLengthExceeded,
    EngineError,
    EngineRefusedCredentials,
    EngineUnavailable,
    InvalidRequest,
    TillerError,
)
from tiller.contract.requests import Chat, Message, Target, TextCompletion
from tiller.contract.results import Usage
from tiller.worker.adapters.base import (
    Completion,
    Delta,
    EngineAdapter,
    EngineRequest,
    text_only,
)
from tiller.worker.adapters.openai_compatible import (
    answers_get,
    engine_timeout,
    headers,
    message,
    post_json,
    sse_lines,
    transport_error,
    usage_of,
)

# TGI's finish reasons (and the Messages API's, which has used both spellings) as OpenAI's.
_FINISH = {
    "length": "length",
    "eos_token": "stop",
    "stop_sequence": "stop",
    "stop": "stop",
    "tool_calls": "tool_calls",
}
# Validation messages that mean the input does not fit (router/src/validation.rs), and those
# of engines behind a proxy that speaks OpenAI.
_CONTEXT_HINTS = (
    "`inputs` tokens + `max_new_tokens` must be <=",
    "`inputs` must have less than",
    "context length",
    "maximum context",
)
_RETRYABLE_STATUS = {408, 409, 424, 425, 429, 500, 502, 503, 504}
# Errors of the request rather than the engine (router/src/infer/mod.rs InferError::error_type).
_REQUEST_ERRORS = {"validation", "template_error", "tool_error", "missing_template_variable"}
_U64 = 2**64


class TGIAdapter(EngineAdapter):
    # What the Messages API takes (router/src/lib.rs ChatRequest); `response_format` becomes
    # TGI's grammar and `n` may only be 1. TGI's own API (a completion) takes response_format
    # as its `grammar` and refuses the others.
    passthrough = frozenset(
        {"tools", "tool_choice", "response_format", "logprobs", "top_logprobs", "n"}
    )

    async def stream(self, request: EngineRequest) -> AsyncIterator[Delta]:
        chat = not isinstance(request.ask, TextCompletion)
        url, body = _chat(request, stream=True) if chat else _generate(request, stream=True)
        trim = _StopTrimmer(request.sampling.stop)
        finished = False
        try:
            async with self.resources.http.post(
                url,
                data=orjson.dumps(body),
                headers=headers(request.target),
                timeout=engine_timeout(request.timeout_seconds),
            ) as response:
                if response.status != 200:
                    raise _status_error(response.status, await response.read(), _param(request))
                raw = bool(request.ask.extra)
                async for event in _events(response, _param(request)):
                    delta = _chat_delta(event, raw) if chat else _generate_delta(event)
                    if delta.finish_reason is not None:
                        finished = True
                        text = trim.end(delta.text, delta.finish_reason)
                    else:
                        text = trim.add(delta.text)
                    if text or delta.finish_reason or delta.usage or delta.choices:
                        yield Delta(text, delta.finish_reason, delta.usage, delta.choices)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise transport_error(error, request.target) from None
        if not finished:
            raise EngineUnavailable("The model engine ended the stream before the answer did.")

    async def predict(self, request: EngineRequest) -> Completion:
        chat = not isinstance(request.ask, TextCompletion)
        url, body = _chat(request, stream=False) if chat else _generate(request, stream=False)
        status, content, answer_headers = await post_json(self.resources.http, request, url, body)
        prompt_tokens = answer_headers.get("x-prompt-tokens")
        if status != 200:
            raise _status_error(status, content, _param(request))
        try:
            data = orjson.loads(content)
            choices: list[dict[str, Any]] | None = None
            if chat:
                choice = data["choices"][0]
                text = choice["message"].get("content") or ""
                finish = _finish(choice.get("finish_reason"))
                usage = usage_of(data.get("usage")) or Usage()
                if request.ask.extra:
                    choices = [_openai_choice(c) for c in data["choices"]]
            else:
                details = data.get("details") or {}
                text = data["generated_text"]
                finish = _finish(details.get("finish_reason"))
                usage = Usage(
                    int(prompt_tokens or len(details.get("prefill") or ())),
                    int(details.get("generated_tokens") or 0),
                )
        # ValueError: not JSON (orjson.JSONDecodeError), or a header that is not a number.
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise EngineError("The model engine returned a response Tiller cannot read.") from None
        text = _trim_stop(text, finish, request.sampling.stop)
        return Completion(text, finish, usage, choices=choices)

    async def health(self, target: Target) -> bool:
        return await answers_get(self.resources.http, f"{_base(target)}/health", target)


# --- requests --------------------------------------------------------------------------------


def _base(target: Target) -> str:
    return target.endpoint.removesuffix("/v1")


def _param(request: EngineRequest) -> str:
    return "prompt" if isinstance(request.ask, TextCompletion) else "messages"


def _extra(request: EngineRequest) -> dict[str, Any]:
    """The OpenAI parameters the request passes on, without those left unset."""
    return {k: v for k, v in request.ask.extra.items() if v is not None}


def _message(m: Message) -> dict[str, Any]:
    """A message as TGI's Messages API takes it: OpenAI's, its text parts joined, and none of
    the fields TGI does not know (an assistant's `reasoning_content`, `audio`…)."""
    out = message(replace(m, extra={}))
    if isinstance(m.content, tuple):
        out["content"] = m.text
    return out


def _seed(seed: int) -> int:
    return seed % _U64  # TGI takes an unsigned 64-bit seed; a negative one keeps its bits


def _chat(request: EngineRequest, *, stream: bool) -> tuple[str, dict[str, Any]]:
    """The Messages API's URL and body."""
    sampling = request.sampling
    assert isinstance(request.ask, Chat)
    chat = text_only(request.ask, request.target)
    messages = [_message(m) for m in chat.messages]
    if request.partial:  # continued by TGI 2.4.1+ (see the module's docstring)
        messages.append({"role": "assistant", "content": request.partial})
    body: dict[str, Any] = {"model": request.target.engine_model, "messages": messages}
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}
    temperature, top_p = sampling.temperature, sampling.top_p
    if top_p is not None and top_p <= 0:
        temperature, top_p = 0.0, None  # greedy, which the Messages API does for temperature 0
    optional = {
        "max_tokens": sampling.max_tokens,
        "temperature": temperature,
        "top_p": top_p if top_p is not None and top_p < 1 else None,
        "seed": None if sampling.seed is None else _seed(sampling.seed),
        "presence_penalty": sampling.presence_penalty or None,
        "frequency_penalty": sampling.frequency_penalty,
        "stop": sampling.stop or None,
    }
    body.update((k, v) for k, v in optional.items() if v is not None)
    for name, value in _extra(request).items():
        if name == "n":
            _one_choice(value)
        elif name == "response_format":
            grammar = _grammar(value)
            if grammar is not None:
                body["response_format"] = grammar
        else:  # tools, tool_choice, logprobs, top_logprobs: as OpenAI defines them
            body[name] = value
    return f"{_base(request.target)}/v1/chat/completions", body


def _generate(request: EngineRequest, *, stream: bool) -> tuple[str, dict[str, Any]]:
    """The URL and body of TGI's own API (`/generate`, `/generate_stream`)."""
    sampling = request.sampling
    parameters: dict[str, Any] = {"details": True}
    greedy = sampling.temperature == 0 or (sampling.top_p is not None and sampling.top_p <= 0)
    # As TGI's own /v1/completions does: sampling unless temperature is 0 (TGI's default is
    # greedy, OpenAI's is to sample at temperature 1).
    parameters["do_sample"] = not greedy
    if not greedy:
        if sampling.temperature is not None:
            parameters["temperature"] = sampling.temperature
        if sampling.top_p is not None and sampling.top_p < 1:
            parameters["top_p"] = sampling.top_p
    if sampling.max_tokens is not None:
        parameters["max_new_tokens"] = sampling.max_tokens
    if sampling.seed is not None:
        parameters["seed"] = _seed(sampling.seed)
    if sampling.frequency_penalty is not None:
        parameters["frequency_penalty"] = sampling.frequency_penalty
    if sampling.presence_penalty:
        raise InvalidRequest(
            "This model's engine (text-generation-inference) has no presence penalty for "
            "completions; use frequency_penalty.",
            param="presence_penalty",
        )
    if sampling.stop:
        parameters["stop"] = sampling.stop
    for name, value in _extra(request).items():
        if name == "n":
            _one_choice(value)
        elif name == "response_format":
            grammar = _grammar(value)
            if grammar is not None:
                parameters["grammar"] = grammar
        elif name == "logprobs" and not value:
            pass  # logprobs 0 / false asks for nothing
        else:
            raise InvalidRequest(
                f"This model's engine (text-generation-inference) does not support {name!r} "
                "for completions.",
                param=name,
            )
    path = "/generate_stream" if stream else "/generate"
    assert isinstance(request.ask, TextCompletion)
    inputs = request.ask.prompt + request.partial
    return f"{_base(request.target)}{path}", {"inputs": inputs, "parameters": parameters}


def _one_choice(n: Any) -> None:
    # TGI's ChatRequest documents `n` as UNUSED: it would answer once whatever n asks.
    if n != 1:
        raise InvalidRequest(
            "This model's engine (text-generation-inference) returns one choice; n must be 1.",
            param="n",
        )


def _grammar(response_format: Any) -> dict[str, Any] | None:
    """OpenAI's `response_format` as TGI's grammar (`{"type": "json", "value": schema}`)."""
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            return {"type": "json", "value": schema}
    if kind in ("json", "regex") and "value" in response_format:
        return dict(response_format)  # already in TGI's own form
    raise InvalidRequest(
        "This model's engine (text-generation-inference) constrains output to a JSON schema: "
        'use response_format {"type": "json_schema", "json_schema": {"schema": ...}}.',
        param="response_format",
    )


# --- answers ---------------------------------------------------------------------------------


def _finish(reason: Any) -> str:
    return _FINISH.get(str(reason), "stop") if reason else "stop"


async def _events(response: aiohttp.ClientResponse, param: str) -> AsyncIterator[dict[str, Any]]:
    """The JSON data of each server-sent event; an error event is raised, classified."""
    async for line in sse_lines(response):
        event = _parse_line(line, param)
        if event is not None:
            yield event


def _parse_line(line: bytes, param: str = "messages") -> dict[str, Any] | None:
    """One line of the engine's server-sent events; None for anything but a data line."""
    if not line.startswith(b"data:"):
        return None
    payload = line[5:].strip()
    if not payload or payload == b"[DONE]":
        return None
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise EngineError("The model engine sent a stream event that is not JSON.") from None
    if not isinstance(event, dict):
        raise EngineError("The model engine sent a stream event Tiller cannot read.")
    if "error" in event:
        raise _error_event(event, param)
    return event


def _chat_delta(chunk: dict[str, Any], raw: bool = False) -> Delta:
    """A Messages API chunk; `raw`: with its choices too (pass-through parameters)."""
    choices = chunk.get("choices") or []
    choice = choices[0] if choices else {}
    reason = choice.get("finish_reason")
    return Delta(
        text=(choice.get("delta") or {}).get("content") or "",
        finish_reason=_finish(reason) if reason else None,
        usage=usage_of(chunk.get("usage")),
        choices=[_openai_choice(c) for c in choices] if raw and choices else None,
    )


def _openai_choice(choice: dict[str, Any]) -> dict[str, Any]:
    """A choice as TGI wrote it, with its finish reason in OpenAI's words."""
    reason = choice.get("finish_reason")
    return choice | {"finish_reason": _finish(reason)} if reason else choice


def _generate_delta(event: dict[str, Any]) -> Delta:
    token = event.get("token") or {}
    text = "" if token.get("special") else str(token.get("text") or "")
    details = event.get("details")
    if not details:
        return Delta(text=text)
    # The last event. `input_length` is in the details of recent TGI only; without it the
    # prompt goes uncounted.
    usage = Usage(int(details.get("input_length") or 0), int(details.get("generated_tokens") or 0))
    return Delta(text=text, finish_reason=_finish(details.get("finish_reason")), usage=usage)


class _StopTrimmer:
    """Cuts the stop sequence TGI leaves at the end of a streamed answer: the last characters,
    as many as the longest stop sequence, wait for the next text or for the end."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=0)
        self.held = ""

    def add(self, text: str) -> str:
        if not self.hold:
            return text
        text = self.held + text
        cut = max(0, len(text) - self.hold)
        self.held = text[cut:]
        return text[:cut]

    def end(self, text: str, finish_reason: str) -> str:
        text, self.held = self.held + text, ""
        return _trim_stop(text, finish_reason, self.stops)


def _trim_stop(text: str, finish_reason: str, stops: Sequence[str]) -> str:
    if finish_reason == "stop":
        for stop in stops:
            if stop and text.endswith(stop):
                return text[: -len(stop)]
    return text


# --- errors ----------------------------------------------------------------------------------


def _status_error(status: int, content: bytes, param: str) -> TillerError:
    """A non-200 answer: TGI's `{"error", "error_type"}`, an OpenAI-style error, or text."""
    detail, kind = "", None
    try:
        data = orjson.loads(content)
        error = data["error"]
        if isinstance(error, dict):
            detail = str(error.get("message") or "")
        else:
            detail, kind = str(error), data.get("error_type")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    detail = detail or content[:200].decode(errors="replace").strip() or f"HTTP {status}"
    if status in (401, 403):  # a protected endpoint may quote the token it refused
        return EngineRefusedCredentials(
            f"The model engine refused Tiller's credentials ({status})."
        )
    return _classify(detail, kind, status, param)


def _error_event(event: dict[str, Any], param: str) -> TillerError:
    """An error sent as a stream event (TGI's ErrorResponse, or the Messages API's newer
    `{"error": {"message", "http_status_code"}}`)."""
    error = event["error"]
    if isinstance(error, dict):
        code = error.get("http_status_code")
        status = code if isinstance(code, int) else None
        return _classify(str(error.get("message") or ""), None, status, param)
    kind = event.get("error_type")
    return _classify(str(error), str(kind) if kind else None, None, param)


def _classify(detail: str, kind: str | None, status: int | None, param: str) -> TillerError:
    lowered = detail.lower()
    if kind == "overloaded" or status == 429:
        return EngineUnavailable(f"The model engine is overloaded: {detail}")
    if "template not found" in lowered:  # the model has no chat template: misconfigured
        return EngineError(f"The model engine cannot serve chat: {detail}")
    if kind in _REQUEST_ERRORS or status in (400, 413, 422):
        if any(hint.lower() in lowered for hint in _CONTEXT_HINTS):
            return ContextLengthExceeded(detail, param=param)
        if "`max_new_tokens` must be <=" in detail:
            return InvalidRequest(detail, param="max_tokens")
        return InvalidRequest(f"The model engine rejected the request: {detail}")
    if kind == "generation" or status == 424:
        return EngineUnavailable(f"The model engine failed during generation: {detail}")
    if status is None or status in _RETRYABLE_STATUS or status >= 500:
        # An error event of another kind (an incomplete generation), or a 5xx: the engine's.
        return EngineUnavailable(f"The model engine failed: {detail}")
    return EngineError(f"The model engine answered {status}: {detail}")
