"""A stand-in for Hugging Face text-generation-inference (TGI), for tests. It is NOT TGI.

No real TGI server runs here (it needs a model and, in practice, a GPU), so this small Starlette
app follows TGI's documented HTTP API closely enough to test an adapter over real HTTP. Its shapes
and messages are taken from huggingface/text-generation-inference: docs/openapi.json and
router/src/server.rs (routes, statuses, stream events), router/src/lib.rs (request and response
types), router/src/validation.rs (validation and its exact messages) and router/src/infer/mod.rs
(error types). It serves:

- `POST /generate` and `POST /generate_stream` (TGI's own API: `inputs` and `parameters`; the
  stream's events carry one token each, the last one `generated_text` and `details`);
- `POST /v1/chat/completions`, the Messages API (OpenAI-shaped, streamed or not; with
  `stream_options.include_usage` a last chunk with no choices carries the usage, as TGI 3 does);
- `GET /health` and `GET /info` (with `max_input_tokens` and `max_total_tokens`).

Errors are TGI's `{"error": ..., "error_type": ...}`: 422 for validation (messages prefixed
"Input validation error: ", as TGI's InferError writes them), 424 for a failure during
generation, 429 when overloaded, 500 for an incomplete generation. A stream reports them as an
event with status 200, even before its first token, as TGI does. A body TGI could not
deserialize is answered in plain text (axum's rejection), 400 or 422.

Generation is deterministic, so tests can assert exact text. Tokens are whitespace-separated
words, each keeping its leading whitespace. A completion echoes the words of its `inputs`; a chat
answer echoes the words of the last user message (rendered with a small ChatML-like template,
whose words are the prompt's tokens). The answer ends with an end-of-sequence token (`</s>`,
special, not part of the text), unless `max_new_tokens` cuts it short ("length") or its text comes
to end with a stop sequence ("stop_sequence"; the stop sequence stays in the text, as TGI leaves
it). A final assistant message is continued, as TGI 2.4.1+ does: the answer is the rest of the
echo after it (its trailing whitespace dropped, as TGI's template rendering does).

Faults, for the tests of error handling, are asked for by a marker anywhere in the prompt:
`[overloaded]` (429), `[generation-error]` (424; a stream fails after two tokens), `[incomplete]`
(500; a stream ends after two tokens with an error event), `[drop]` (a stream stops after two
tokens without a last event) and `[slow]` (waits 2 s before answering).

Run it alone with `python -m tests.engines.tgi_standin --port 8080` from the repository root, or
in a test with `running()`, which serves it from a thread on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

_TOKEN = re.compile(r"\s*\S+")
EOS = "</s>"
VERSION = "3.1.1-standin"  # what `system_fingerprint` and /info report (TGI's version form)
# TGI's GenerateParameters and ChatRequest defaults (router/src/lib.rs).
DEFAULT_MAX_NEW_TOKENS = 100


@dataclass(frozen=True)
class Settings:
    model_id: str = "standin/echo"
    max_input_tokens: int = 256
    max_total_tokens: int = 384
    max_stop_sequences: int = 4
    max_best_of: int = 2
    max_concurrent_requests: int = 128
    token_delay: float = 0.0  # seconds between streamed tokens


class Rejected(Exception):
    """A request TGI answers with an error: its status, message and error_type."""

    def __init__(self, status: int, message: str, error_type: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type


class BadBody(Exception):
    """A body TGI's JSON extractor (axum) refuses: answered in plain text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def validation(message: str) -> Rejected:
    return Rejected(422, f"Input validation error: {message}", "validation")


@dataclass
class Plan:
    """A generation, decided up front: its tokens (text, special), finish reason, counts."""

    tokens: list[tuple[str, bool]]
    finish_reason: str  # TGI's: length, eos_token, stop_sequence
    input_length: int
    seed: int | None
    fault: str | None = None

    @property
    def text(self) -> str:
        return "".join(text for text, special in self.tokens if not special)


def words(text: str) -> list[str]:
    return _TOKEN.findall(text)


def fault_in(text: str) -> str | None:
    for fault in ("overloaded", "generation-error", "incomplete", "drop", "slow"):
        if f"[{fault}]" in text:
            return fault
    return None


def plan(
    answer: list[str],
    *,
    input_length: int,
    max_new_tokens: int,
    stop: list[str],
    seed: int | None,
    fault: str | None,
) -> Plan:
    tokens: list[tuple[str, bool]] = []
    text = ""
    for word in answer:
        if len(tokens) == max_new_tokens:
            return Plan(tokens, "length", input_length, seed, fault)
        tokens.append((word, False))
        text += word
        if any(text.endswith(s) for s in stop if s):
            return Plan(tokens, "stop_sequence", input_length, seed, fault)
    if len(tokens) == max_new_tokens:
        return Plan(tokens, "length", input_length, seed, fault)
    tokens.append((EOS, True))
    return Plan(tokens, "eos_token", input_length, seed, fault)


def validate(
    settings: Settings,
    parameters: dict[str, Any],
    input_length: int,
    *,
    empty: bool,
) -> int:
    """TGI's Validation::validate (the checks this stand-in can make), in its order; the
    max_new_tokens it will generate."""
    temperature = parameters.get("temperature")
    if temperature is not None and temperature <= 0:
        raise validation("`temperature` must be strictly positive")
    repetition_penalty = parameters.get("repetition_penalty")
    if repetition_penalty is not None and repetition_penalty <= 0:
        raise validation("`repetition_penalty` must be strictly positive")
    frequency_penalty = parameters.get("frequency_penalty")
    if frequency_penalty is not None and not -2.0 <= frequency_penalty <= 2.0:
        raise validation("`frequency_penalty` must be >= -2.0 and <= 2.0")
    top_p = parameters.get("top_p")
    if top_p is not None and not 0.0 < top_p < 1.0:
        raise validation("`top_p` must be > 0.0 and < 1.0")
    top_k = parameters.get("top_k")
    if top_k is not None and top_k <= 0:
        raise validation("`top_k` must be strictly positive")
    max_new_tokens = parameters.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    if max_new_tokens == 0:
        raise validation("`max_new_tokens` must be strictly positive")
    stop = parameters.get("stop") or []
    if len(stop) > settings.max_stop_sequences:
        raise validation(
            f"`stop` supports up to {settings.max_stop_sequences} stop sequences. "
            f"Given: {len(stop)}"
        )
    if empty:
        raise validation("`inputs` cannot be empty")
    if max_new_tokens is None:  # TGI: as many as fit
        max_new_tokens = max(0, settings.max_total_tokens - input_length)
    if input_length + max_new_tokens > settings.max_total_tokens:
        raise validation(
            f"`inputs` tokens + `max_new_tokens` must be <= {settings.max_total_tokens}. "
            f"Given: {input_length} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
        )
    if input_length > settings.max_input_tokens:
        raise validation(
            f"`inputs` must have less than {settings.max_input_tokens} tokens. "
            f"Given: {input_length}"
        )
    return int(max_new_tokens)


def check_types(parameters: dict[str, Any]) -> None:
    """What serde would refuse before validation (as axum's 422 plain-text rejection)."""
    for name in ("max_new_tokens", "seed", "top_k"):
        value = parameters.get(name)
        if value is not None and (not isinstance(value, int) or value < 0):
            raise BadBody(
                422,
                "Failed to deserialize the JSON body into the target type: "
                f"parameters.{name}: invalid value: integer `{value}`, expected u32/u64",
            )
    for name in ("temperature", "top_p", "repetition_penalty", "frequency_penalty"):
        value = parameters.get(name)
        if value is not None and not isinstance(value, int | float):
            raise BadBody(
                422,
                "Failed to deserialize the JSON body into the target type: "
                f"parameters.{name}: invalid type, expected f32",
            )
    grammar = parameters.get("grammar")
    if grammar is not None and (
        not isinstance(grammar, dict)
        or grammar.get("type") not in ("json", "json_object", "regex")
        or "value" not in grammar
    ):
        raise BadBody(
            422,
            "Failed to deserialize the JSON body into the target type: unknown variant "
            f"`{grammar.get('type') if isinstance(grammar, dict) else grammar}`, "
            "expected one of `json`, `json_object`, `regex`",
        )


def render(messages: list[dict[str, Any]]) -> str:
    """The chat template: ChatML-like, a generation prompt unless the last message is the
    assistant's, which is then continued (trimmed at the end, as TGI does)."""
    text = "".join(f"<|{m.get('role')}|>\n{m.get('content') or ''}\n" for m in messages)
    if messages and messages[-1].get("role") == "assistant":
        return text.rstrip()
    return text + "<|assistant|>\n"


def chat_answer(messages: list[dict[str, Any]]) -> list[str]:
    last_user = next(
        (str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"),
        "",
    )
    echo = words(last_user)
    if not messages or messages[-1].get("role") != "assistant":
        return echo
    begun = str(messages[-1].get("content") or "").rstrip()
    full = "".join(echo)
    if not full.startswith(begun):
        return echo
    rest = full[len(begun) :]
    head = re.match(r"\S*", rest)
    first = head.group(0) if head else ""
    return ([first] if first else []) + words(rest[len(first) :])


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()

    def error_response(error: Rejected) -> Response:
        body = {"error": error.message, "error_type": error.error_type}
        return Response(orjson.dumps(body), error.status, media_type="application/json")

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as error:
            raise BadBody(400, f"Failed to parse the request body as JSON: {error}") from None
        if not isinstance(body, dict):
            raise BadBody(422, "Failed to deserialize the JSON body into the target type")
        return body

    def native_request(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """GenerateRequest as serde reads it (BadBody if it cannot)."""
        inputs = body.get("inputs")
        parameters = body.get("parameters") or {}
        if not isinstance(inputs, str) or not isinstance(parameters, dict):
            raise BadBody(
                422,
                "Failed to deserialize the JSON body into the target type: missing field `inputs`",
            )
        check_types(parameters)
        return inputs, parameters

    def native_plan(inputs: str, parameters: dict[str, Any]) -> Plan:
        fault = fault_in(inputs)
        if fault == "overloaded":
            raise Rejected(429, "Model is overloaded", "overloaded")
        input_length = len(words(inputs))
        max_new_tokens = validate(settings, parameters, input_length, empty=not inputs)
        return plan(
            words(inputs),
            input_length=input_length,
            max_new_tokens=max_new_tokens,
            stop=list(parameters.get("stop") or []),
            seed=parameters.get("seed"),
            fault=fault,
        )

    def chat_request(body: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """ChatRequest as serde reads it, as the parameters of TGI's own API."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise BadBody(
                422,
                "Failed to deserialize the JSON body into the target type: missing field "
                "`messages`",
            )
        # ChatRequest::try_into_generate: temperature 0 is greedy, presence_penalty becomes
        # repetition_penalty + 2, response_format becomes the grammar.
        temperature = body.get("temperature")
        presence = body.get("presence_penalty")
        parameters = {
            "temperature": None if temperature == 0 else temperature,
            "repetition_penalty": None if presence is None else presence + 2.0,
            "frequency_penalty": body.get("frequency_penalty"),
            "top_p": body.get("top_p"),
            "max_new_tokens": body.get("max_tokens") or DEFAULT_MAX_NEW_TOKENS,
            "stop": body.get("stop") or [],
            "seed": body.get("seed"),
            "grammar": body.get("response_format"),
        }
        parameters = {k: v for k, v in parameters.items() if v is not None}
        check_types(parameters)
        return messages, parameters

    def chat_plan(messages: list[dict[str, Any]], parameters: dict[str, Any]) -> Plan:
        prompt = render(messages)
        fault = fault_in(prompt)
        if fault == "overloaded":
            raise Rejected(429, "Model is overloaded", "overloaded")
        input_length = len(words(prompt))
        max_new_tokens = validate(settings, parameters, input_length, empty=not messages)
        return plan(
            chat_answer(messages),
            input_length=input_length,
            max_new_tokens=max_new_tokens,
            stop=list(parameters.get("stop") or []),
            seed=parameters.get("seed"),
            fault=fault,
        )

    async def before_answer(answer: Plan) -> None:
        if answer.fault == "slow":
            await asyncio.sleep(2.0)

    def fail_after_two(answer: Plan) -> Rejected | None:
        """The error a faulty stream ends with after its first two tokens."""
        if answer.fault == "generation-error":
            return Rejected(
                424,
                "Request failed during generation: Server error: CUDA out of memory. "
                "Tried to allocate 2.00 GiB",
                "generation",
            )
        if answer.fault == "incomplete":
            return Rejected(500, "Incomplete generation stream", "incomplete_generation")
        return None

    def whole_answer_fault(answer: Plan) -> Rejected | None:
        if answer.fault == "generation-error":
            return fail_after_two(answer)
        if answer.fault == "incomplete":
            return Rejected(500, "Incomplete generation", "incomplete_generation")
        return None

    # --- TGI's own API ------------------------------------------------------------------------

    async def generate(request: Request) -> Response:
        try:
            inputs, parameters = native_request(await body_of(request))
            answer = native_plan(inputs, parameters)
            await before_answer(answer)
            if fault := whole_answer_fault(answer):
                raise fault
        except BadBody as error:
            return PlainTextResponse(error.message, error.status)
        except Rejected as error:
            return error_response(error)
        generated = len(answer.tokens)
        body: dict[str, Any] = {"generated_text": answer.text}
        if parameters.get("details") or parameters.get("decoder_input_details"):
            prefill = [
                {"id": i, "text": w, "logprob": None if i == 0 else -1.0}
                for i, w in enumerate(words(inputs))
            ]
            body["details"] = {
                "finish_reason": answer.finish_reason,
                "generated_tokens": generated,
                "seed": answer.seed,
                "prefill": prefill if parameters.get("decoder_input_details") else [],
                "tokens": [
                    {"id": i, "text": text, "logprob": -0.5, "special": special}
                    for i, (text, special) in enumerate(answer.tokens)
                ],
            }
        headers = {
            "x-compute-type": "standin",
            "x-prompt-tokens": str(answer.input_length),
            "x-generated-tokens": str(generated),
        }
        return Response(orjson.dumps(body), 200, headers, media_type="application/json")

    async def generate_stream(request: Request) -> Response:
        try:  # the body is read before the stream starts; everything else fails in it
            inputs, parameters = native_request(await body_of(request))
        except BadBody as error:
            return PlainTextResponse(error.message, error.status)
        return sse(native_events(inputs, parameters))

    async def native_events(inputs: str, parameters: dict[str, Any]) -> AsyncIterator[bytes]:
        if parameters.get("decoder_input_details"):
            error = validation(
                "`decoder_input_details` == true is not supported when streaming tokens"
            )
            yield event({"error": error.message, "error_type": error.error_type})
            return
        try:
            answer = native_plan(inputs, parameters)
        except Rejected as error:
            yield event({"error": error.message, "error_type": error.error_type})
            return
        await before_answer(answer)
        failure = fail_after_two(answer)
        last = len(answer.tokens)
        for index, (text, special) in enumerate(answer.tokens, start=1):
            if index == 3 and (failure or answer.fault == "drop"):
                if failure:
                    yield event({"error": failure.message, "error_type": failure.error_type})
                return
            token = {"id": index, "text": text, "logprob": -0.5, "special": special}
            done = index == last
            details = None
            if done and parameters.get("details"):
                details = {
                    "finish_reason": answer.finish_reason,
                    "generated_tokens": last,
                    "seed": answer.seed,
                    "input_length": answer.input_length,
                }
            yield event(
                {
                    "index": index,
                    "token": token,
                    "generated_text": answer.text if done else None,
                    "details": details,
                }
            )
            await asyncio.sleep(settings.token_delay)

    # --- the Messages API ---------------------------------------------------------------------

    async def chat_completions(request: Request) -> Response:
        try:
            body = await body_of(request)
            messages, parameters = chat_request(body)
            if body.get("stream"):
                return sse(chat_events(body, messages, parameters))
            answer = chat_plan(messages, parameters)
            await before_answer(answer)
            if fault := whole_answer_fault(answer):
                raise fault
        except BadBody as error:
            return PlainTextResponse(error.message, error.status)
        except Rejected as error:
            return error_response(error)
        generated = len(answer.tokens)
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": answer.text},
            "logprobs": None,
            "finish_reason": openai_finish(answer.finish_reason),
        }
        if body.get("logprobs"):
            choice["logprobs"] = {"content": [logprob(t) for t, _ in answer.tokens]}
        completion = {
            "object": "chat.completion",
            "id": "",
            "created": int(time.time()),
            "model": settings.model_id,
            "system_fingerprint": VERSION,
            "choices": [choice],
            "usage": usage(answer.input_length, generated),
        }
        return Response(orjson.dumps(completion), 200, media_type="application/json")

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        return event(
            {
                "object": "chat.completion.chunk",
                "id": "",
                "created": int(time.time()),
                "model": settings.model_id,
                "system_fingerprint": VERSION,
                "choices": choices,
                "usage": usage,
            }
        )

    async def chat_events(
        body: dict[str, Any], messages: list[dict[str, Any]], parameters: dict[str, Any]
    ) -> AsyncIterator[bytes]:
        try:
            answer = chat_plan(messages, parameters)
        except Rejected as error:
            yield event({"error": error.message, "error_type": error.error_type})
            return
        await before_answer(answer)
        failure = fail_after_two(answer)
        last = len(answer.tokens)
        for index, (text, special) in enumerate(answer.tokens, start=1):
            if index == 3 and (failure or answer.fault == "drop"):
                if failure:
                    yield event({"error": failure.message, "error_type": failure.error_type})
                return
            done = index == last
            yield chunk(
                [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": "" if special else text},
                        "logprobs": {"content": [logprob(text)]} if body.get("logprobs") else None,
                        "finish_reason": openai_finish(answer.finish_reason) if done else None,
                    }
                ]
            )
            await asyncio.sleep(settings.token_delay)
        if (body.get("stream_options") or {}).get("include_usage"):
            yield chunk([], usage(answer.input_length, last))
        yield b"data: [DONE]\n\n"

    # --- the rest -----------------------------------------------------------------------------

    async def health(request: Request) -> Response:
        return Response(status_code=200)

    async def info(request: Request) -> Response:
        body = {
            "model_id": settings.model_id,
            "model_sha": None,
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": settings.max_concurrent_requests,
            "max_best_of": settings.max_best_of,
            "max_stop_sequences": settings.max_stop_sequences,
            "max_input_tokens": settings.max_input_tokens,
            "max_total_tokens": settings.max_total_tokens,
            "validation_workers": 2,
            "max_client_batch_size": 4,
            "router": "text-generation-router",
            "version": VERSION,
            "sha": None,
            "docker_label": None,
        }
        return Response(orjson.dumps(body), 200, media_type="application/json")

    return Starlette(
        routes=[
            Route("/generate", generate, methods=["POST"]),
            Route("/generate_stream", generate_stream, methods=["POST"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/info", info, methods=["GET"]),
        ]
    )


def event(data: dict[str, Any]) -> bytes:
    """One server-sent event as TGI's axum server writes it (`data:` and no space)."""
    return b"data:" + orjson.dumps(data) + b"\n\n"


def sse(events: AsyncIterator[bytes]) -> StreamingResponse:
    headers = {"x-accel-buffering": "no", "cache-control": "no-cache"}
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


def openai_finish(reason: str) -> str:
    """FinishReason::format(true): TGI's finish reasons as its Messages API writes them."""
    return "length" if reason == "length" else "stop"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def logprob(token: str) -> dict[str, Any]:
    return {"token": token, "logprob": -0.5, "top_logprobs": []}


@contextlib.contextmanager
def running(settings: Settings | None = None) -> Iterator[str]:
    """Serve the stand-in from a thread on a free local port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings),
        log_level="warning",
        access_log=False,
        lifespan="off",
        loop="asyncio",
        ws="none",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the TGI stand-in did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--model-id", default=Settings.model_id)
    parser.add_argument("--max-input-tokens", type=int, default=Settings.max_input_tokens)
    parser.add_argument("--max-total-tokens", type=int, default=Settings.max_total_tokens)
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds per token")
    args = parser.parse_args(argv)
    settings = Settings(
        model_id=args.model_id,
        max_input_tokens=args.max_input_tokens,
        max_total_tokens=args.max_total_tokens,
        token_delay=args.token_delay,
    )
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
