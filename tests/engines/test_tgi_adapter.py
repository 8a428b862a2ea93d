"""The TGI adapter against the TGI stand-in (tests/engines/tgi_standin.py) over real HTTP: both of
TGI's APIs (the Messages API for chat, /generate and /generate_stream for a prompt), streamed and
whole, and how every kind of failure is classified."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests.engines.tgi_standin import running
from tests.support import closed_port
from tiller.common.errors import (
    ContextLengthExceeded,
    EngineError,
    EngineRefusedCredentials,
    EngineUnavailable,
    EngineUnreachable,
    InvalidRequest,
    TillerError,
)
from tiller.contract.requests import Chat, Embedding, Message, Sampling, Target, TextCompletion
from tiller.contract.results import Usage
from tiller.worker.adapters import tgi
from tiller.worker.adapters.base import AdapterResources, Completion, Delta, EngineRequest
from tiller.worker.adapters.tgi import TGIAdapter

CHAT = "chat"
PROMPT = "prompt"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with running() as url:
        yield url


@pytest.fixture
async def adapter() -> AsyncIterator[TGIAdapter]:
    async with aiohttp.ClientSession() as http:
        yield TGIAdapter(AdapterResources(http=http))


def request(
    endpoint: str,
    text: str,
    api: str = CHAT,
    *,
    partial: str = "",
    timeout: float = 10.0,
    extra: dict[str, Any] | None = None,
    **sampling: Any,
) -> EngineRequest:
    target = Target("tgi-test", "tgi", endpoint, "standin/echo", "tiller.tgi-test")
    asked = (
        Chat((Message("user", text),), extra or {})
        if api == CHAT
        else TextCompletion(text, extra or {})
    )
    return EngineRequest(target, asked, Sampling(**sampling), timeout, partial)


async def streamed(adapter: TGIAdapter, req: EngineRequest) -> tuple[str, list[Delta]]:
    deltas = [delta async for delta in adapter.stream(req)]
    return "".join(d.text for d in deltas), deltas


def last(deltas: list[Delta]) -> tuple[str | None, Usage | None]:
    """The finish reason and usage the stream reported (wherever they came)."""
    finish = next((d.finish_reason for d in reversed(deltas) if d.finish_reason), None)
    usage = next((d.usage for d in reversed(deltas) if d.usage), None)
    return finish, usage


async def both(adapter: TGIAdapter, req: EngineRequest) -> tuple[Completion, Completion]:
    """The same request whole and streamed, as Completions to compare."""
    whole = await adapter.predict(req)
    text, deltas = await streamed(adapter, req)
    finish, usage = last(deltas)
    assert finish is not None and usage is not None
    return whole, Completion(text, finish, usage)


# --- answers ---------------------------------------------------------------------------------


async def test_a_chat_is_answered_whole_and_streamed(adapter: TGIAdapter, endpoint: str) -> None:
    whole, streamed_ = await both(adapter, request(endpoint, "Hello there world"))
    # The stand-in echoes the user's words, then its end-of-sequence token (counted, not shown).
    # The prompt is the rendered template: <|user|> \nHello there world \n<|assistant|>.
    assert whole == streamed_ == Completion("Hello there world", "stop", Usage(5, 4))


async def test_a_prompt_goes_to_tgis_own_api(adapter: TGIAdapter, endpoint: str) -> None:
    whole, streamed_ = await both(adapter, request(endpoint, "one two three", PROMPT))
    # eos_token becomes "stop"; the prompt's tokens come from x-prompt-tokens (whole) and
    # details.input_length (streamed).
    assert whole == streamed_ == Completion("one two three", "stop", Usage(3, 4))


async def test_a_stream_arrives_token_by_token(adapter: TGIAdapter, endpoint: str) -> None:
    for api in (CHAT, PROMPT):
        _, deltas = await streamed(adapter, request(endpoint, "one two three", api))
        assert [d.text for d in deltas if d.text] == ["one", " two", " three"]


@pytest.mark.parametrize("api", [CHAT, PROMPT])
async def test_max_tokens_cuts_the_answer_at_length(
    adapter: TGIAdapter, endpoint: str, api: str
) -> None:
    whole, streamed_ = await both(adapter, request(endpoint, "one two three", api, max_tokens=2))
    assert whole.text == streamed_.text == "one two"
    assert whole.finish_reason == streamed_.finish_reason == "length"
    assert whole.usage.completion_tokens == streamed_.usage.completion_tokens == 2


@pytest.mark.parametrize("api", [CHAT, PROMPT])
async def test_the_stop_sequence_tgi_leaves_in_the_text_is_cut(
    adapter: TGIAdapter, endpoint: str, api: str
) -> None:
    req = request(endpoint, "alpha beta gamma delta", api, stop=["gamma"])
    whole, streamed_ = await both(adapter, req)
    # TGI answers "alpha beta gamma" (stop_sequence); OpenAI's answer does not hold the stop.
    assert whole.text == streamed_.text == "alpha beta "
    assert whole.finish_reason == streamed_.finish_reason == "stop"


@pytest.mark.parametrize("api", [CHAT, PROMPT])
async def test_greedy_and_full_nucleus_are_not_refused(
    adapter: TGIAdapter, endpoint: str, api: str
) -> None:
    # TGI refuses temperature 0 and top_p 1 ("must be strictly positive", "< 1.0"); they mean
    # greedy decoding and no nucleus cut, which the adapter asks for instead.
    for sampling in ({"temperature": 0.0}, {"top_p": 1.0}, {"top_p": 0.0}, {"seed": -1}):
        whole = await adapter.predict(request(endpoint, "one two", api, **sampling))
        assert whole.text == "one two", sampling


def test_the_bodies_ask_tgi_for_what_openai_means() -> None:
    greedy = request("http://tgi", "hi", PROMPT, temperature=0.0, top_p=0.5, seed=-1)
    _, body = tgi._generate(greedy, stream=False)
    assert body["parameters"] == {"details": True, "do_sample": False, "seed": 2**64 - 1}
    sampled = request("http://tgi", "hi", PROMPT, top_p=1.0, max_tokens=7, stop=["x"])
    url, body = tgi._generate(sampled, stream=True)
    assert url == "http://tgi/generate_stream"
    assert body == {
        "inputs": "hi",
        "parameters": {"details": True, "do_sample": True, "max_new_tokens": 7, "stop": ["x"]},
    }
    chat = request("http://tgi/v1", "hi", top_p=0.0, presence_penalty=0.0, frequency_penalty=0.5)
    url, body = tgi._chat(chat, stream=True)
    assert url == "http://tgi/v1/chat/completions"  # the endpoint may name /v1 or not
    assert body == {
        "model": "standin/echo",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.0,  # top_p 0 is greedy; TGI's Messages API makes temperature 0 so
        "frequency_penalty": 0.5,  # presence_penalty 0 would be TGI's repetition_penalty 2
    }


async def test_a_partial_answer_is_continued(adapter: TGIAdapter, endpoint: str) -> None:
    # A chat's partial answer is a final assistant message, which TGI 2.4.1+ continues.
    chat = await adapter.predict(request(endpoint, "Hello there world", partial="Hello"))
    assert chat.text == " there world"
    # A completion's is the end of its inputs (the stand-in echoes them).
    prompt = await adapter.predict(request(endpoint, "one two", PROMPT, partial=" three"))
    assert prompt.text == "one two three"


async def test_health_is_tgis_health_route(adapter: TGIAdapter, endpoint: str) -> None:
    assert await adapter.health(request(endpoint, "").target) is True
    closed = f"http://127.0.0.1:{closed_port()}"
    assert await adapter.health(request(closed, "").target) is False


async def test_embeddings_are_refused(adapter: TGIAdapter, endpoint: str) -> None:
    req = request(endpoint, "")
    with pytest.raises(InvalidRequest) as caught:
        await adapter.embed(EngineRequest(req.target, Embedding(("a",)), Sampling(), 5.0))
    assert caught.value.param == "model" and not caught.value.retryable


# --- pass-through parameters -----------------------------------------------------------------


async def test_logprobs_return_tgis_choices(adapter: TGIAdapter, endpoint: str) -> None:
    req = request(endpoint, "one two", extra={"logprobs": True})
    whole = await adapter.predict(req)
    assert whole.choices is not None
    assert whole.choices[0]["logprobs"]["content"][0]["token"] == "one"
    _, deltas = await streamed(adapter, req)
    chunks = [d.choices for d in deltas if d.choices]
    assert chunks[0][0]["logprobs"]["content"][0] == {
        "token": "one",
        "logprob": -0.5,
        "top_logprobs": [],
    }
    assert chunks[-1][0]["finish_reason"] == "stop"


async def test_a_json_schema_becomes_tgis_grammar(adapter: TGIAdapter, endpoint: str) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    extra = {
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    }
    grammar = {"type": "json", "value": schema}
    for api in (CHAT, PROMPT):
        req = request(endpoint, "one two", api, extra=extra)
        assert (await adapter.predict(req)).text == "one two"  # the stand-in took the grammar
    chat = request("http://tgi", "hi", extra=extra)
    assert tgi._chat(chat, stream=False)[1]["response_format"] == grammar
    prompt = request("http://tgi", "hi", PROMPT, extra=extra)
    assert tgi._generate(prompt, stream=False)[1]["parameters"]["grammar"] == grammar
    plain = request("http://tgi", "hi", extra={"response_format": {"type": "text"}})
    assert "response_format" not in tgi._chat(plain, stream=False)[1]


def test_the_tools_go_to_the_messages_api_as_they_are() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    extra = {"tools": tools, "tool_choice": "auto", "top_logprobs": 2, "n": 1}
    _, body = tgi._chat(request("http://tgi", "hi", extra=extra), stream=False)
    assert body["tools"] == tools and body["tool_choice"] == "auto"
    assert body["top_logprobs"] == 2 and "n" not in body


@pytest.mark.parametrize(
    ("api", "extra", "param"),
    [
        (CHAT, {"n": 2}, "n"),  # TGI documents n as unused: it would answer once
        (CHAT, {"response_format": {"type": "json_object"}}, "response_format"),  # no schema
        (PROMPT, {"tools": []}, "tools"),
        (PROMPT, {"logprobs": 2}, "logprobs"),
        (PROMPT, {"n": 3}, "n"),
    ],
)
def test_what_tgi_cannot_honour_is_refused_naming_it(
    api: str, extra: dict[str, Any], param: str
) -> None:
    req = request("http://tgi", "hi", api, extra=extra)
    with pytest.raises(InvalidRequest) as caught:
        (tgi._chat if api == CHAT else tgi._generate)(req, stream=False)
    assert caught.value.param == param and not caught.value.retryable


def test_tgis_own_api_has_no_presence_penalty() -> None:
    assert tgi._generate(request("http://t", "hi", PROMPT, presence_penalty=0.0), stream=False)
    with pytest.raises(InvalidRequest) as caught:
        tgi._generate(request("http://t", "hi", PROMPT, presence_penalty=0.5), stream=False)
    assert caught.value.param == "presence_penalty"


# --- failures --------------------------------------------------------------------------------


async def raised(adapter: TGIAdapter, req: EngineRequest, stream: bool) -> TillerError:
    with pytest.raises(TillerError) as caught:
        if stream:
            await streamed(adapter, req)
        else:
            await adapter.predict(req)
    return caught.value


MODES = [(api, stream) for api in (CHAT, PROMPT) for stream in (False, True)]


@pytest.mark.parametrize(("api", "stream"), MODES)
async def test_an_input_too_long_is_context_length_exceeded(
    adapter: TGIAdapter, endpoint: str, api: str, stream: bool
) -> None:
    # A stream reports it as an event (status 200); a whole answer as a 422.
    too_long = " ".join(["word"] * 300)  # 300 + 100 new tokens > the stand-in's 384
    error = await raised(adapter, request(endpoint, too_long, api), stream)
    assert type(error) is ContextLengthExceeded and not error.retryable
    assert "`inputs` tokens + `max_new_tokens` must be <= 384" in error.message
    assert error.param == ("messages" if api == CHAT else "prompt")
    # More input than the engine takes at all, though the total fits.
    over_input = " ".join(["word"] * 270)
    error = await raised(adapter, request(endpoint, over_input, api, max_tokens=5), stream)
    assert type(error) is ContextLengthExceeded and "must have less than 256" in error.message


@pytest.mark.parametrize(("api", "stream"), MODES)
async def test_another_validation_error_is_an_invalid_request(
    adapter: TGIAdapter, endpoint: str, api: str, stream: bool
) -> None:
    req = request(endpoint, "one two", api, stop=["a", "b", "c", "d", "e"])
    error = await raised(adapter, req, stream)
    assert type(error) is InvalidRequest and not error.retryable
    assert "`stop` supports up to 4 stop sequences. Given: 5" in error.message


@pytest.mark.parametrize(("api", "stream"), MODES)
@pytest.mark.parametrize(
    ("marker", "said"),
    [
        ("[overloaded]", "overloaded"),  # 429, or an event in a stream
        ("[generation-error]", "CUDA out of memory"),  # 424, or an event after two tokens
        ("[incomplete]", "Incomplete generation"),  # 500, or an event after two tokens
        ("[drop]", "ended the stream"),  # a stream that stops without its last event
    ],
)
async def test_engine_failures_are_retryable(
    adapter: TGIAdapter, endpoint: str, api: str, stream: bool, marker: str, said: str
) -> None:
    if marker == "[drop]" and not stream:
        return  # a whole answer has no stream to drop
    error = await raised(adapter, request(endpoint, f"one two three {marker}", api), stream)
    assert type(error) is EngineUnavailable and error.retryable
    assert said in error.message


@pytest.mark.parametrize("api", [CHAT, PROMPT])
async def test_a_stream_that_fails_midway_gives_its_tokens_then_the_error(
    adapter: TGIAdapter, endpoint: str, api: str
) -> None:
    got: list[str] = []
    with pytest.raises(EngineUnavailable, match="during generation"):
        async for delta in adapter.stream(request(endpoint, "a b c d [generation-error]", api)):
            got.append(delta.text)
    assert "".join(got) == "a b"


@pytest.mark.parametrize(("api", "stream"), MODES)
async def test_an_engine_that_is_not_there_is_unavailable(
    adapter: TGIAdapter, api: str, stream: bool
) -> None:
    closed = f"http://127.0.0.1:{closed_port()}"
    error = await raised(adapter, request(closed, "one", api), stream)
    # Unreachable, not failing: the worker may wait for it (nothing reached the engine).
    assert type(error) is EngineUnreachable and error.retryable
    assert "Cannot reach" in error.message


@pytest.mark.parametrize(("api", "stream"), MODES)
async def test_an_engine_too_slow_times_out_retryably(
    adapter: TGIAdapter, endpoint: str, api: str, stream: bool
) -> None:
    req = request(endpoint, "one [slow]", api, timeout=0.3)
    error = await raised(adapter, req, stream)
    assert type(error) is EngineUnavailable and error.retryable
    assert "timed out" in error.message


@pytest.mark.parametrize(
    ("status", "body", "kind", "retryable"),
    [
        (
            422,
            {"error": "Template error: template not found", "error_type": "template_error"},
            EngineError,
            False,
        ),
        (
            422,
            {"error": "Template error: roles must alternate", "error_type": "template_error"},
            InvalidRequest,
            False,
        ),
        (422, "Failed to deserialize the JSON body into the target type: x", InvalidRequest, False),
        (401, {"error": "Authorization required"}, EngineRefusedCredentials, False),
        (404, "Not Found", EngineError, False),
        (503, "<html>Service Unavailable</html>", EngineUnavailable, True),
        (
            424,
            {"error": "Request failed during generation: boom", "error_type": "generation"},
            EngineUnavailable,
            True,
        ),
        (429, {"error": {"message": "rate limited"}}, EngineUnavailable, True),  # a proxy's
    ],
)
def test_statuses_are_classified(status: int, body: Any, kind: type, retryable: bool) -> None:
    content = body.encode() if isinstance(body, str) else orjson.dumps(body)
    error = tgi._status_error(status, content, "messages")
    assert type(error) is kind and error.retryable is retryable


def test_both_forms_of_a_stream_error_event_are_read() -> None:
    tgi_form = b'data:{"error":"Input validation error: `inputs` must have less than 4 tokens. Given: 9","error_type":"validation"}'
    with pytest.raises(ContextLengthExceeded):
        tgi._parse_line(tgi_form)
    # The Messages API's form for OpenAI's client (TGI 2.4+).
    openai_form = b'data: {"error":{"message":"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 8. Given: 9 `inputs` tokens and 1 `max_new_tokens`","http_status_code":422}}'
    with pytest.raises(ContextLengthExceeded):
        tgi._parse_line(openai_form, "prompt")
    with pytest.raises(EngineUnavailable):
        tgi._parse_line(b'data:{"error":"Model is overloaded","error_type":"overloaded"}')
    with pytest.raises(EngineError):
        tgi._parse_line(b"data: {not json")
    assert tgi._parse_line(b": keep-alive") is None
    assert tgi._parse_line(b"data: [DONE]") is None


def test_tgis_finish_reasons_are_openais() -> None:
    # Older Messages APIs passed TGI's own reasons on; the stream's details always have them.
    chunk = {"choices": [{"delta": {"content": ""}, "finish_reason": "eos_token"}]}
    assert tgi._chat_delta(chunk).finish_reason == "stop"
    for reason, openai in (("eos_token", "stop"), ("stop_sequence", "stop"), ("length", "length")):
        event = {"token": {"text": "</s>", "special": True}, "details": {"finish_reason": reason}}
        assert tgi._generate_delta(event) == Delta("", openai, Usage(0, 0))


def test_a_stop_sequence_split_across_tokens_is_cut() -> None:
    trim = tgi._StopTrimmer(["END", "x"])
    out = [trim.add(t) for t in ("abc", "de", "E", "N")]
    assert "".join(out) + trim.end("D", "stop") == "abcde"
    trim = tgi._StopTrimmer(["END"])
    out = [trim.add(t) for t in ("abc", "de", "E", "N")]
    assert "".join(out) + trim.end("", "length") == "abcdeEN"  # cut only at a stop
