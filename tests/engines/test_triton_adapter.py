"""The Triton adapter against a real Triton Inference Server (pytriton's, on CPU).

The server (tests/engines/triton_server.py, started by conftest.py) runs in the Python of
$TILLER_TRITON_PYTHON, a cached venv with `nvidia-pytriton` (tests/engines/engine_env.sh triton).
pytriton pins protobuf<7, so it cannot live in the worker's venv; the adapter's tritonclient can.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import time
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
import pytest
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor

from tests.engines.conftest import TritonServer
from tests.engines.triton_server import embed as expected_vector
from tests.support import closed_port
from tiller.common.errors import (
    ContextLengthExceeded,
    EngineError,
    EngineUnavailable,
    EngineUnreachable,
    InvalidRequest,
    TillerError,
)
from tiller.contract.engines.triton_options import check_options, parse_options
from tiller.contract.requests import Chat, Embedding, Message, Sampling, Target, TextCompletion
from tiller.contract.results import Usage
from tiller.worker.adapters import triton as triton_module
from tiller.worker.adapters.base import AdapterResources, Delta, EngineRequest
from tiller.worker.adapters.triton import TritonAdapter

TEXT: dict[str, Any] = {
    "inputs": {"prompt": "text_input", "max_tokens": "max_tokens"},
    "outputs": {"text": "text_output", "completion_tokens": "completion_tokens"},
    "prompt_template": {"message": "{content}\n", "suffix": ""},
}
STREAM: dict[str, Any] = {
    "decoupled": True,
    "inputs": {"prompt": "text_input", "max_tokens": "max_tokens"},
    "outputs": {"text": "text_output"},
    "prompt_template": {"message": "{content}\n", "suffix": ""},
}
EMBED: dict[str, Any] = {"inputs": {"prompt": "text_input"}, "outputs": {"embedding": "embedding"}}


@pytest.fixture
def server(triton_server: TritonServer) -> TritonServer:
    return triton_server


@pytest.fixture
async def adapter() -> AsyncIterator[TritonAdapter]:
    async with aiohttp.ClientSession() as http:
        made = TritonAdapter(AdapterResources(http=http))
        yield made
        await made.aclose()


def target(endpoint: str, model: str, options: dict[str, Any]) -> Target:
    return Target(
        deployment=f"triton-{model}",
        adapter="triton",
        endpoint=endpoint,
        engine_model=model,
        task_queue="q",
        options=options,
    )


def ask(
    server: TritonServer | str,
    model: str,
    options: dict[str, Any],
    content: str = "",
    *,
    timeout: float = 30.0,
    **sampling: Any,
) -> EngineRequest:
    endpoint = server if isinstance(server, str) else server.grpc
    return EngineRequest(
        target=target(endpoint, model, options),
        ask=Chat((Message("user", content),)),
        sampling=Sampling(**sampling),
        timeout_seconds=timeout,
    )


async def collect(adapter: TritonAdapter, request: EngineRequest) -> list[Delta]:
    return [delta async for delta in adapter.stream(request)]


def calls(adapter: TritonAdapter) -> list[Callable[[EngineRequest], Awaitable[object]]]:
    """Every way to ask: predict, stream (a chat), embed (the chat's text to embed)."""

    async def embed(request: EngineRequest) -> object:
        return await adapter.embed(replace(request, ask=Embedding(("x",))))

    return [adapter.predict, functools.partial(collect, adapter), embed]


# --- predict and stream ------------------------------------------------------------------------
async def test_predict_classic(server: TritonServer, adapter: TritonAdapter) -> None:
    answer = await adapter.predict(ask(server, "tiny-text", TEXT, "the quick brown fox"))
    assert answer.text == "fox brown quick the"
    assert answer.finish_reason == "stop"
    # prompt: words counted by Tiller; completion: the model's completion_tokens tensor
    assert answer.usage == Usage(prompt_tokens=4, completion_tokens=4)


async def test_max_tokens_reaches_the_model(server: TritonServer, adapter: TritonAdapter) -> None:
    request = ask(server, "tiny-text", TEXT, "the quick brown fox", max_tokens=2)
    answer = await adapter.predict(request)
    assert (answer.text, answer.finish_reason) == ("fox brown", "length")


async def test_default_template_and_partial(server: TritonServer, adapter: TritonAdapter) -> None:
    options = {"inputs": {"prompt": "text_input"}, "outputs": {"text": "text_output"}}
    request = EngineRequest(
        target=target(server.grpc, "tiny-text", options),
        ask=Chat((Message("system", "be brief"), Message("user", "TRITON_ECHO hi"))),
        sampling=Sampling(),
        timeout_seconds=30,
        partial="So",
    )
    answer = await adapter.predict(request)
    assert answer.text == "system: be brief\nuser: TRITON_ECHO hi\nassistant: So"


async def test_legacy_completion_prompt(server: TritonServer, adapter: TritonAdapter) -> None:
    request = replace(ask(server, "tiny-text", TEXT), ask=TextCompletion("a b\nc d e"))
    assert (await adapter.predict(request)).text == "e d c"


async def test_stream_of_a_classic_model_is_one_delta(
    server: TritonServer, adapter: TritonAdapter
) -> None:
    deltas = await collect(adapter, ask(server, "tiny-text", TEXT, "one two three"))
    assert deltas == [Delta("three two one", "stop", Usage(3, 3))]


async def test_stream_of_a_decoupled_model(server: TritonServer, adapter: TritonAdapter) -> None:
    deltas = await collect(adapter, ask(server, "tiny-stream", STREAM, "a b c d"))
    assert [d.text for d in deltas] == ["d", " c", " b", " a", ""]
    assert deltas[-1] == Delta("", "stop", Usage(prompt_tokens=4, completion_tokens=4))
    assert all(d.finish_reason is None and d.usage is None for d in deltas[:-1])


async def test_predict_collects_a_decoupled_stream(
    server: TritonServer, adapter: TritonAdapter
) -> None:
    answer = await adapter.predict(ask(server, "tiny-stream", STREAM, "a b c d", max_tokens=3))
    assert (answer.text, answer.finish_reason) == ("d c b", "length")
    assert answer.usage == Usage(4, 3)


async def test_decoupled_is_read_from_the_model_config(
    server: TritonServer, adapter: TritonAdapter
) -> None:
    options = {key: value for key, value in STREAM.items() if key != "decoupled"}
    answer = await adapter.predict(ask(server, "tiny-stream", options, "x y"))
    assert answer.text == "y x"


async def test_an_empty_stream_is_an_empty_answer(
    server: TritonServer, adapter: TritonAdapter
) -> None:
    deltas = await collect(adapter, ask(server, "tiny-stream", STREAM, ""))
    assert deltas == [Delta("", "stop", Usage(0, 0))]


async def test_stop_sequences_cut_the_answer(server: TritonServer, adapter: TritonAdapter) -> None:
    # The model takes no stop input: Tiller cuts, holding back what may begin a stop.
    request = ask(server, "tiny-stream", STREAM, "a b c d", stop=["c b"])
    deltas = await collect(adapter, request)
    assert "".join(d.text for d in deltas) == "d "
    assert deltas[-1].finish_reason == "stop"
    answer = await adapter.predict(ask(server, "tiny-text", TEXT, "a b c d", stop=[" b"]))
    assert (answer.text, answer.finish_reason) == ("d c", "stop")


async def test_cancelling_the_iteration_cancels_the_grpc_stream(
    server: TritonServer, adapter: TritonAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    client = adapter._client(server.grpc)
    original = client.stream_infer

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(original(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(client, "stream_infer", spy)
    words = " ".join(f"w{i}" for i in range(8))  # 0.5 s each: 4.5 s in all
    request = ask(server, "tiny-stream", STREAM, f"{words} TRITON_SLOW")
    started = time.monotonic()
    stream = adapter.stream(request)
    assert isinstance(stream, AsyncGenerator)
    first = await anext(stream)
    assert first.text == "TRITON_SLOW"
    await stream.aclose()  # what the activity does when the client goes away
    assert calls[0]._grpc_call.cancelled()
    # and a task cancelled while it waits for the next piece
    task = asyncio.create_task(collect(adapter, request))
    await asyncio.sleep(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls[1]._grpc_call.cancelled()
    assert time.monotonic() - started < 3  # the rest would take 4 s more
    assert (await adapter.predict(ask(server, "tiny-text", TEXT, "still there"))).text


# --- embeddings --------------------------------------------------------------------------------
async def test_embeddings_in_batches(server: TritonServer, adapter: TritonAdapter) -> None:
    texts = [f"text number {i}" for i in range(6)]  # tiny-embed batches at most 4
    request = replace(ask(server, "tiny-embed", EMBED), ask=Embedding(tuple(texts)))
    result = await adapter.embed(request)
    assert len(result.vectors) == 6 and all(len(v) == 8 for v in result.vectors)
    for text, vector in zip(texts, result.vectors, strict=True):
        assert math.isclose(math.fsum(x * x for x in vector), 1.0, rel_tol=1e-5)
        assert vector == pytest.approx(expected_vector(text), rel=1e-6)
    assert result.prompt_tokens == 18
    again = await adapter.embed(replace(request, ask=Embedding((texts[3],))))
    assert again.vectors == [result.vectors[3]]


async def test_embeddings_need_an_embedding_output(
    server: TritonServer, adapter: TritonAdapter
) -> None:
    request = replace(ask(server, "tiny-text", TEXT), ask=Embedding(("x",)))
    with pytest.raises(InvalidRequest, match="does not serve embeddings"):
        await adapter.embed(request)


# --- errors ------------------------------------------------------------------------------------
async def test_a_failing_model_is_retryable(server: TritonServer, adapter: TritonAdapter) -> None:
    with pytest.raises(EngineUnavailable, match="asked to fail") as raised:
        await adapter.predict(ask(server, "tiny-text", TEXT, "TRITON_FAIL now"))
    assert raised.value.retryable


async def test_a_model_failing_mid_stream(server: TritonServer, adapter: TritonAdapter) -> None:
    # Reversed: "TRITON_FAIL" is the first word; the model fails before the second.
    got: list[str] = []
    with pytest.raises(EngineUnavailable, match="asked to fail") as raised:
        async for delta in adapter.stream(ask(server, "tiny-stream", STREAM, "x y TRITON_FAIL")):
            got.append(delta.text)
    assert got == ["TRITON_FAIL"] and raised.value.retryable


async def test_an_unknown_model_is_an_engine_error(
    server: TritonServer, adapter: TritonAdapter
) -> None:
    options = {**TEXT, "outputs": {**TEXT["outputs"], "embedding": "e"}}
    for call in calls(adapter):
        with pytest.raises(EngineError, match="no model 'nope'") as raised:
            await call(ask(server, "nope", options, "x"))
        assert not raised.value.retryable


async def test_misnamed_tensors_are_engine_errors(
    server: TritonServer, adapter: TritonAdapter
) -> None:
    options = {**TEXT, "inputs": {"prompt": "prompt"}}
    with pytest.raises(EngineError, match=r"no input 'prompt' \(options.inputs.prompt\)"):
        await adapter.predict(ask(server, "tiny-text", options, "x"))
    options = {**STREAM, "decoupled": False}
    with pytest.raises(EngineError, match="is decoupled"):
        await adapter.predict(ask(server, "tiny-stream", options, "x"))
    with pytest.raises(EngineError, match=r"misconfigured: options\.inputs\.prompt: required"):
        await adapter.predict(ask(server, "tiny-text", {}, "x"))


async def test_invalid_argument_is_an_invalid_request(
    server: TritonServer, adapter: TritonAdapter
) -> None:
    """A request Triton refuses (here: a stale idea of the input's shape) is the caller's."""
    for model, options in (("tiny-text", TEXT), ("tiny-stream", STREAM)):
        request = ask(server, model, options, "a b")
        await adapter.predict(request)  # reads and keeps the model's metadata
        key = (server.grpc, model, "")
        known = adapter._models[key]
        spec = replace(known.inputs["text_input"], shape=(1, 1))
        adapter._models[key] = replace(known, inputs={**known.inputs, "text_input": spec})
        with pytest.raises(InvalidRequest, match="unexpected shape"):
            await adapter.predict(request)
        assert key not in adapter._models  # forgotten: read again on the next request
        assert (await adapter.predict(request)).text == "b a"


async def test_timeouts_are_retryable(server: TritonServer, adapter: TritonAdapter) -> None:
    slow = ask(server, "tiny-stream", STREAM, "a b c TRITON_SLOW", timeout=0.8)
    with pytest.raises(EngineUnavailable, match="Deadline") as raised:
        await collect(adapter, slow)
    assert raised.value.retryable
    with pytest.raises(EngineUnavailable, match="Deadline"):
        await adapter.predict(slow)


async def test_a_server_that_is_down(adapter: TritonAdapter) -> None:
    endpoint = f"grpc://127.0.0.1:{closed_port()}"
    options = {**TEXT, "outputs": {**TEXT["outputs"], "embedding": "e"}}
    for call in calls(adapter):
        with pytest.raises(EngineUnavailable) as raised:
            await call(ask(endpoint, "tiny-text", options, "x"))
        assert raised.value.retryable
    assert not await adapter.health(target(endpoint, "tiny-text", TEXT))


async def test_health(server: TritonServer, adapter: TritonAdapter) -> None:
    assert await adapter.health(target(server.grpc, "tiny-text", TEXT))
    assert await adapter.health(target(f"grpc://{server.grpc}", "tiny-stream", STREAM))
    assert not await adapter.health(target(server.grpc, "nope", TEXT))


def test_http_generate_on_a_decoupled_model(server: TritonServer) -> None:
    """Triton 2.51's HTTP generate endpoint answers 200 with an error in the body when a
    decoupled model sends more than one response: why the adapter speaks gRPC."""
    http = urllib.request.Request(
        f"{server.http}/v2/models/tiny-stream/generate",
        data=orjson.dumps({"text_input": "a b c"}),
        method="POST",
    )
    with urllib.request.urlopen(http, timeout=10) as response:
        status, body = response.status, orjson.loads(response.read())
    assert status == 200
    assert "exactly 1 response" in body["error"]


# --- classification and options (no server) ----------------------------------------------------
@pytest.mark.parametrize(
    ("status", "message", "kind", "retryable"),
    [
        ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", EngineUnreachable, True),
        ("StatusCode.UNAVAILABLE", "Socket closed", EngineUnavailable, True),
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", EngineUnavailable, True),
        ("StatusCode.RESOURCE_EXHAUSTED", "queue full", EngineUnavailable, True),
        ("StatusCode.INTERNAL", "Failed to process the request(s)", EngineUnavailable, True),
        ("StatusCode.NOT_FOUND", "Request for unknown model: 'x'", EngineError, False),
        ("StatusCode.INVALID_ARGUMENT", "unexpected shape for input", InvalidRequest, False),
        ("StatusCode.UNIMPLEMENTED", "ModelInfer RPC doesn't support", EngineError, False),
        ("StatusCode.UNAUTHENTICATED", "no token", EngineError, False),
        (None, "Request for unknown model: 'x' is not found", EngineError, False),
        (None, "inference input 'a' data-type is 'INT64'", InvalidRequest, False),
        (  # vLLM's Triton backend, inside a stream (no status): the client's 400, not a retry
            None,
            "Error generating stream: The decoder prompt (length 9000) is longer than the "
            "maximum model length of 4096.",
            ContextLengthExceeded,
            False,
        ),
        (
            None,
            "Traceback (most recent call last):\n  x\nValueError: boom\n",
            EngineUnavailable,
            True,
        ),
    ],
)
def test_statuses_are_classified(
    status: str | None, message: str, kind: type[TillerError], retryable: bool
) -> None:
    error = InferenceServerException(message, status=status)
    classified = triton_module._classify(error, target("h:1", "m", TEXT))
    assert type(classified) is kind and classified.retryable is retryable


def test_a_python_traceback_is_shortened_to_its_cause() -> None:
    message = (
        "Failed to process the request(s) for model 'm', message: TritonModelException: "
        'Model execute error: Traceback (most recent call last):\n  File "a.py", line 1\n'
        "    raise x\nc_python_backend_utils.TritonModelException: Traceback (most recent call "
        'last):\n  File "b.py"\nRuntimeError: out of memory\n\n\n\nAt:\n  a.py(501): execute\n'
    )
    assert triton_module._short(message) == "RuntimeError: out of memory"


def test_inputs_follow_the_model_metadata() -> None:
    """Datatypes and shapes come from the model (here a batching one, as TRT-LLM's and vLLM's
    backends are); each sampling field goes only where `options.inputs` sends it."""
    tensor = triton_module._Tensor
    model = triton_module._Model(
        inputs={
            "text_input": tensor("BYTES", (-1, 1)),
            "max_tokens": tensor("INT32", (-1, 1)),
            "temperature": tensor("FP32", (-1, 1)),
            "stop_words": tensor("BYTES", (-1, -1)),
            "stream": tensor("BOOL", (-1, 1)),
            "sampling_parameters": tensor("BYTES", (-1, 1)),
        },
        outputs={"text_output": tensor("BYTES", (-1, 1))},
        max_batch_size=8,
        decoupled=True,
    )
    options = parse_options(
        {
            "inputs": {
                "prompt": "text_input",
                "max_tokens": "max_tokens",
                "temperature": "temperature",
                "stop": "stop_words",
                "stream": "stream",
                "sampling_parameters": "sampling_parameters",
            },
            "outputs": {"text": "text_output"},
            "defaults": {"max_tokens": 64, "temperature": 0.7},
        }
    )
    request = ask("h:1", "m", {}, "hi", temperature=0.0, stop=["\n", "END"])
    inputs = triton_module._text_inputs(request, options, model, "the prompt", stream=True)
    sent = {i.name(): (i.datatype(), i.shape()) for i in inputs}
    assert sent == {
        "text_input": ("BYTES", [1, 1]),
        "max_tokens": ("INT32", [1, 1]),
        "temperature": ("FP32", [1, 1]),
        "stop_words": ("BYTES", [1, 2]),
        "stream": ("BOOL", [1, 1]),
        "sampling_parameters": ("BYTES", [1, 1]),
    }
    (parameters_json,) = deserialize_bytes_tensor(inputs[-1]._get_content())
    parameters = orjson.loads(parameters_json)
    assert parameters == {"max_tokens": 64, "temperature": 0.0, "stop": ["\n", "END"]}
    # a stop the model takes is not applied again by Tiller
    assert triton_module._answer(request, options).stops == []


def test_options_are_checked() -> None:
    check_options(TEXT)
    check_options(STREAM)
    check_options(EMBED)
    parsed = parse_options({**TEXT, "model_version": 3, "defaults": {"max_tokens": 16}})
    assert parsed.model_version == "3" and parsed.defaults == {"max_tokens": 16}
    bad: list[tuple[Any, str]] = [
        (None, "options.inputs.prompt: required"),
        ({}, "options.inputs.prompt: required"),
        ({"outputs": {"text": "t"}}, "options.inputs.prompt: required"),
        ({**TEXT, "inputs": {"prompt": ""}}, "options.inputs.prompt: must be a tensor name"),
        ({**TEXT, "inputs": {"prompt": "t", "top_k": "k"}}, "options.inputs.top_k: unknown"),
        ({**TEXT, "outputs": {}}, "options.outputs.text: required"),
        ({**TEXT, "outputs": "text_output"}, "options.outputs: must be a mapping"),
        ({**TEXT, "decoupled": "yes"}, "options.decoupled: must be true or false"),
        ({**TEXT, "stream_output": "words"}, "options.stream_output: must be one of"),
        ({**TEXT, "model_version": 1.5}, "options.model_version:"),
        ({**TEXT, "defaults": {"max_tokens": 1.5}}, "options.defaults.max_tokens: must be an int"),
        ({**TEXT, "defaults": {"stop": "x"}}, "options.defaults.stop: must be a list"),
        ({**TEXT, "defaults": {"tools": 1}}, "options.defaults.tools: unknown"),
        ({**TEXT, "prompt_template": {"message": "{who}"}}, "options.prompt_template.message:"),
        ({**TEXT, "prompt_template": {"roles": {"user": "{"}}}, "prompt_template.roles.user:"),
        ({**TEXT, "prompt_template": {"head": ""}}, "options.prompt_template.head: unknown"),
        ({**TEXT, "temperature": 1}, "options.temperature: unknown option"),
    ]
    for options, message in bad:
        with pytest.raises(ValueError, match=re.escape(message)):
            check_options(options)
