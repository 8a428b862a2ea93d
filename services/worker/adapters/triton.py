"""Adapter for models served by NVIDIA Triton Inference Server, over its gRPC API.

The deployment's `options` (triton_options.py) name the model's tensors; their datatypes and
shapes come from the model's metadata and config, read once per endpoint and model and kept
until a request fails. A classic model answers `ModelInfer` with the whole text; a decoupled one
answers `ModelStreamInfer` with one response per piece, then closes the stream (Tiller sends
one request and half-closes, so the end of the stream is the end of the answer). `predict`
collects a decoupled model's stream; `stream` of a classic model is one delta with everything.
Embeddings go to a classic model in batches of at most its `max_batch_size`.

Usage: Triton knows no tokens in general, so Tiller counts whitespace-separated words of the
prompt and of the answer, unless `outputs` maps `prompt_tokens` / `completion_tokens` to
integer tensors the model fills (a decoupled model's `completion_tokens` are added up over its
responses). finish_reason is "length" when the answer has max_tokens of them, else "stop".
A `stop` the model does not take as an input is applied here: the answer ends before it.

Errors come from tritonclient as InferenceServerException with a gRPC status text (or none, for
an error a decoupled model sends inside its stream), or as grpc.RpcError while a stream is read;
both are classified by `_classify`. The adapter never retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import orjson
import tritonclient.grpc.aio as triton_grpc
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from tiller.common.errors import (
    ContextLengthExceeded,
    EngineError,
    EngineUnavailable,
    EngineUnreachable,
    InvalidRequest,
    TillerError,
)
from tiller.contract.engines.triton_options import (
    SAMPLING_INPUTS,
    TritonOptions,
    parse_endpoint,
    parse_options,
)
from tiller.contract.requests import Chat, Embedding, Target, TextCompletion
from tiller.contract.results import Usage
from tiller.worker.adapters.base import (
    AdapterResources,
    Completion,
    Delta,
    Embeddings,
    EngineAdapter,
    EngineRequest,
    text_only,
)

HEALTH_TIMEOUT_SECONDS = 2.0
METADATA_TIMEOUT_SECONDS = 10.0
_RETRYABLE = {
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "RESOURCE_EXHAUSTED",
    "ABORTED",
    "CANCELLED",  # cancelled by the server (shutting down); ours never reaches here
    "INTERNAL",  # the model raised: Triton's 500, retried like every engine's 5xx
    "UNKNOWN",
}
_REQUEST_STATUSES = {"INVALID_ARGUMENT", "OUT_OF_RANGE"}
# How gRPC says a channel never connected (the request did not reach Triton), unlike an
# UNAVAILABLE that Triton answered or a connection that broke mid-request.
_UNREACHABLE_HINTS = ("failed to connect", "connection refused", "dns resolution failed")
# What Triton says inside a decoupled stream, where the gRPC status is lost.
_NOT_FOUND_HINTS = ("unknown model", "is not found")
# How LLM backends say a prompt is over-long (vLLM's: "prompt (length N) is longer than the
# maximum model length"; TensorRT-LLM's: "exceeds maximum input length"), with or without a status.
_CONTEXT_HINTS = (
    "maximum model length",
    "maximum context length",
    "maximum input length",
    "context length",
)
EMBED_BATCHES_IN_FLIGHT = 8
_REQUEST_HINTS = (
    "unexpected inference input",
    "unexpected inference output",
    "unexpected shape",
    "data-type is",
    "batch-size must be",
    "expected inputs",
)
_TRACEBACK_NOISE = re.compile(r"^(Traceback|At:|\s|$)")


@dataclass(frozen=True)
class _Tensor:
    datatype: str
    shape: tuple[int, ...]  # as the model declares it, batch dimension included (-1: any)


@dataclass(frozen=True)
class _Model:
    """What one model's metadata and config say."""

    inputs: Mapping[str, _Tensor]
    outputs: Mapping[str, _Tensor]
    max_batch_size: int
    decoupled: bool


@dataclass
class _Answer:
    """An answer being assembled from the engine's responses."""

    max_tokens: int | None
    stops: list[str]
    text: str = ""  # what reached the caller
    raw: str = ""  # all the engine's text, before stop sequences (for cumulative outputs)
    held: str = ""  # text that may be the start of a stop sequence
    stopped: bool = False
    completion_tokens: int | None = None
    prompt_tokens: int | None = None

    def feed(self, piece: str) -> str:
        """The part of `piece` that may be shown now (stop sequences cut the answer)."""
        if self.stopped:
            return ""
        if not self.stops:
            self.text += piece
            return piece
        pending = self.held + piece
        ends = [i for i in (pending.find(stop) for stop in self.stops) if i >= 0]
        if ends:
            self.stopped, self.held = True, ""
            shown = pending[: min(ends)]
        else:
            keep = _partial_stop(pending, self.stops)
            self.held = pending[len(pending) - keep :]
            shown = pending[: len(pending) - keep]
        self.text += shown
        return shown

    def flush(self) -> str:
        held, self.held = self.held, ""
        self.text += held
        return held

    def usage(self, prompt: str) -> Usage:
        prompt_tokens = self.prompt_tokens
        completion = self.completion_tokens
        return Usage(
            prompt_tokens=len(prompt.split()) if prompt_tokens is None else prompt_tokens,
            completion_tokens=len(self.text.split()) if completion is None else completion,
        )

    def finish_reason(self, usage: Usage) -> str:
        if self.stopped:
            return "stop"
        limit = self.max_tokens
        return "length" if limit is not None and usage.completion_tokens >= limit else "stop"


class TritonAdapter(EngineAdapter):
    def __init__(self, resources: AdapterResources) -> None:
        super().__init__(resources)
        self._clients: dict[str, Any] = {}  # endpoint -> triton_grpc.InferenceServerClient
        self._models: dict[tuple[str, str, str], _Model] = {}

    async def aclose(self) -> None:
        """Close every gRPC channel (a worker shutting down, a test ending)."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    # --- the interface -------------------------------------------------------------------------
    async def predict(self, request: EngineRequest) -> Completion:
        options = _options(request.target)
        model = await self._model(request.target, options, request.timeout_seconds)
        prompt = _prompt(request, options)
        answer = _answer(request, options)
        if model.decoupled:
            pieces = self._stream_pieces(request, options, model, prompt, answer)
            async with contextlib.aclosing(pieces):
                async for _ in pieces:
                    if answer.stopped:
                        break
        else:
            result = await self._infer(request, options, model, prompt, stream=False)
            answer.feed(_take(answer, result, options))
        answer.flush()
        usage = answer.usage(prompt)
        return Completion(answer.text, answer.finish_reason(usage), usage)

    async def stream(self, request: EngineRequest) -> AsyncIterator[Delta]:
        options = _options(request.target)
        model = await self._model(request.target, options, request.timeout_seconds)
        prompt = _prompt(request, options)
        answer = _answer(request, options)
        if model.decoupled:
            pieces = self._stream_pieces(request, options, model, prompt, answer)
            # Closed at once when the caller stops iterating: that cancels the gRPC stream.
            async with contextlib.aclosing(pieces):
                async for piece in pieces:
                    if piece:
                        yield Delta(text=piece)
                    if answer.stopped:
                        break
        else:
            result = await self._infer(request, options, model, prompt, stream=True)
            answer.feed(_take(answer, result, options))
        rest = answer.flush()
        usage = answer.usage(prompt)
        text = rest if model.decoupled else answer.text
        yield Delta(text=text, finish_reason=answer.finish_reason(usage), usage=usage)

    async def embed(self, request: EngineRequest) -> Embeddings:
        options = _options(request.target)
        name = options.outputs.get("embedding")
        if name is None:
            return await super().embed(request)
        model = await self._model(request.target, options, request.timeout_seconds)
        if model.decoupled:
            raise EngineError(
                f"The Triton model {request.target.engine_model!r} is decoupled; embeddings need "
                "a classic (not decoupled) model."
            )
        assert isinstance(request.ask, Embedding)
        texts = list(request.ask.texts)
        size = model.max_batch_size if model.max_batch_size > 0 else max(1, len(texts))
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
        # At most this many batches in flight per request: 2,048 texts to a model with
        # max_batch_size 1 must not become 2,048 calls at once.
        gate = asyncio.Semaphore(EMBED_BATCHES_IN_FLIGHT)

        async def one(chunk: list[str]) -> tuple[list[list[float]], int]:
            async with gate:
                return await self._embed_chunk(request, options, model, chunk)

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(chunk)) for chunk in chunks]
        except ExceptionGroup as errors:
            raise errors.exceptions[0] from None
        vectors: list[list[float]] = []
        prompt_tokens = 0
        for task in tasks:
            chunk_vectors, tokens = task.result()
            vectors.extend(chunk_vectors)
            prompt_tokens += tokens
        return Embeddings(vectors, prompt_tokens)

    async def health(self, target: Target) -> bool:
        try:
            options = _options(target)
            client = self._client(target.endpoint)
            return bool(
                await client.is_server_ready(client_timeout=HEALTH_TIMEOUT_SECONDS)
            ) and bool(
                await client.is_model_ready(
                    target.engine_model,
                    options.model_version,
                    client_timeout=HEALTH_TIMEOUT_SECONDS,
                )
            )
        except (InferenceServerException, grpc.RpcError, TillerError):
            return False

    # --- calls ---------------------------------------------------------------------------------
    def _client(self, endpoint: str) -> Any:
        client = self._clients.get(endpoint)
        if client is None:
            try:
                address, secure = parse_endpoint(endpoint)
            except ValueError as error:
                raise EngineError(f"The Triton deployment is misconfigured: {error}") from None
            client = triton_grpc.InferenceServerClient(address, ssl=secure)
            self._clients[endpoint] = client
        return client

    async def _model(self, target: Target, options: TritonOptions, seconds: float) -> _Model:
        key = (target.endpoint, target.engine_model, options.model_version)
        model = self._models.get(key)
        if model is not None:
            return model
        client = self._client(target.endpoint)
        name, version = target.engine_model, options.model_version
        try:
            limit = min(seconds, METADATA_TIMEOUT_SECONDS)
            metadata, config = await asyncio.gather(
                client.get_model_metadata(name, version, as_json=True, client_timeout=limit),
                client.get_model_config(name, version, as_json=True, client_timeout=limit),
            )
        except (InferenceServerException, grpc.RpcError) as error:
            raise _classify(error, target) from None
        try:
            model = _read_model(metadata, config.get("config", {}))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise EngineError(
                f"Triton sent metadata for model {name!r} that Tiller cannot read."
            ) from None
        _check_tensors(model, options, target)
        if options.decoupled is not None and options.decoupled != model.decoupled:
            kind = "decoupled" if model.decoupled else "not decoupled"
            raise EngineError(
                f"The Triton model {name!r} is {kind}, but its deployment sets "
                f"options.decoupled: {str(options.decoupled).lower()}."
            )
        self._models[key] = model
        return model

    def _forget(self, target: Target, options: TritonOptions) -> None:
        """Read the model's metadata again next time (it may have been reloaded)."""
        self._models.pop((target.endpoint, target.engine_model, options.model_version), None)

    async def _infer(
        self,
        request: EngineRequest,
        options: TritonOptions,
        model: _Model,
        prompt: str,
        *,
        stream: bool,
    ) -> Any:
        inputs = _text_inputs(request, options, model, prompt, stream=stream)
        try:
            return await self._client(request.target.endpoint).infer(
                request.target.engine_model,
                inputs,
                model_version=options.model_version,
                outputs=_requested(options, model),
                client_timeout=request.timeout_seconds,
            )
        except (InferenceServerException, grpc.RpcError) as error:
            self._forget(request.target, options)
            raise _classify(error, request.target) from None

    async def _stream_pieces(
        self,
        request: EngineRequest,
        options: TritonOptions,
        model: _Model,
        prompt: str,
        answer: _Answer,
    ) -> AsyncGenerator[str, None]:
        """The shown text of each response of a decoupled model; leaving cancels the stream."""
        target = request.target
        inputs = _text_inputs(request, options, model, prompt, stream=True)
        one_request = {
            "model_name": target.engine_model,
            "model_version": options.model_version,
            "inputs": inputs,
            "outputs": _requested(options, model),
        }

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield one_request  # then half-close: Triton ends the stream after the last response

        call = None
        try:
            call = self._client(target.endpoint).stream_infer(
                requests(), stream_timeout=request.timeout_seconds
            )
            async for result, error in call:
                if error is not None:
                    raise error  # the model's error, sent inside the stream (no status)
                yield answer.feed(_take(answer, result, options))
        except (InferenceServerException, grpc.RpcError) as error:
            self._forget(target, options)
            raise _classify(error, target) from None
        finally:
            if call is not None:
                call.cancel()  # a no-op once the stream has ended

    async def _embed_chunk(
        self, request: EngineRequest, options: TritonOptions, model: _Model, texts: list[str]
    ) -> tuple[list[list[float]], int]:
        name = options.inputs["prompt"]
        tensor = _input(name, model.inputs[name], [text.encode() for text in texts])
        output = options.outputs["embedding"]
        try:
            result = await self._client(request.target.endpoint).infer(
                request.target.engine_model,
                [tensor],
                model_version=options.model_version,
                outputs=_requested(options, model, ("embedding", "prompt_tokens")),
                client_timeout=request.timeout_seconds,
            )
        except (InferenceServerException, grpc.RpcError) as error:
            self._forget(request.target, options)
            raise _classify(error, request.target) from None
        array = result.as_numpy(output)
        if array is None or array.size == 0 or array.size % max(1, len(texts)):
            raise EngineError(
                f"The Triton model {request.target.engine_model!r} sent no embedding per text."
            )
        vectors = [[float(x) for x in row] for row in np.asarray(array).reshape(len(texts), -1)]
        tokens = _count(result, options.outputs.get("prompt_tokens"))
        return vectors, sum(len(text.split()) for text in texts) if tokens is None else tokens


# --- requests ----------------------------------------------------------------------------------
def _options(target: Target) -> TritonOptions:
    try:
        return parse_options(target.options)
    except ValueError as error:
        raise EngineError(
            f"The Triton deployment {target.deployment!r} is misconfigured: {error}"
        ) from None


def _prompt(request: EngineRequest, options: TritonOptions) -> str:
    """The one text the model continues: the completion's prompt, or the rendered chat."""
    ask = request.ask
    if isinstance(ask, TextCompletion):
        return ask.prompt + request.partial
    assert isinstance(ask, Chat)
    messages = [(m.role, m.text, m.name or "") for m in text_only(ask, request.target).messages]
    return options.prompt_template.render(messages) + request.partial


def _answer(request: EngineRequest, options: TritonOptions) -> _Answer:
    max_tokens = request.sampling.max_tokens
    if max_tokens is None:
        max_tokens = options.defaults.get("max_tokens")
    stop = request.sampling.stop or options.defaults.get("stop") or []
    # A stop the model takes as an input is the model's to apply.
    stops = [] if "stop" in options.inputs else [s for s in stop if s]
    return _Answer(max_tokens=max_tokens, stops=stops)


def _sampling(request: EngineRequest, options: TritonOptions) -> dict[str, Any]:
    """The sampling fields the request (or the deployment's defaults) sets."""
    values: dict[str, Any] = {}
    for name in SAMPLING_INPUTS:
        value = getattr(request.sampling, name)
        if value is None or value == []:  # unset (a request's 0 is a value)
            value = options.defaults.get(name)
        if value is not None and value != []:
            values[name] = value
    return values


def _text_inputs(
    request: EngineRequest, options: TritonOptions, model: _Model, prompt: str, *, stream: bool
) -> list[Any]:
    sampling = _sampling(request, options)
    values: dict[str, list[Any]] = {"prompt": [prompt.encode()], "stream": [stream]}
    for name, value in sampling.items():
        values[name] = [s.encode() for s in value] if name == "stop" else [value]
    values["sampling_parameters"] = [orjson.dumps(sampling)]
    inputs = []
    batched = model.max_batch_size > 0
    for field_name, tensor_name in options.inputs.items():
        if field_name in values:
            spec = model.inputs[tensor_name]
            inputs.append(_input(tensor_name, spec, values[field_name], single=batched))
    return inputs


def _input(name: str, spec: _Tensor, values: list[Any], *, single: bool = False) -> Any:
    """An input tensor holding `values` along the model's first variable dimension (the batch
    dimension of a batching model), every other dimension 1; `single`: a batch of one."""
    shape = [1 if size < 0 else size for size in spec.shape]
    variable = [i for i, size in enumerate(spec.shape) if size < 0]
    if single and len(values) > 1:
        variable = variable[1:]  # the batch dimension stays 1
    if len(values) != 1:
        if not variable:
            raise EngineError(
                f"The Triton input {name!r} (shape {list(spec.shape)}) cannot hold "
                f"{len(values)} values."
            )
        shape[variable[0]] = len(values)
    if int(np.prod(shape)) != len(values):
        raise EngineError(
            f"The Triton input {name!r} has shape {list(spec.shape)}: Tiller sends it one value "
            "(or a list along one dimension)."
        )
    if spec.datatype == "BYTES":
        array = np.array(values, dtype=np.object_)
    else:
        dtype = triton_to_np_dtype(spec.datatype)
        if dtype is None:
            raise EngineError(f"The Triton input {name!r} has datatype {spec.datatype}.")
        array = np.array(values).astype(dtype)
    tensor = InferInput(name, shape, spec.datatype)
    tensor.set_data_from_numpy(array.reshape(shape))
    return tensor


def _requested(
    options: TritonOptions,
    model: _Model,
    fields: Sequence[str] = ("text", "completion_tokens", "prompt_tokens"),
) -> list[Any]:
    return [
        InferRequestedOutput(options.outputs[name])
        for name in fields
        if name in options.outputs and options.outputs[name] in model.outputs
    ]


# --- responses ---------------------------------------------------------------------------------
def _take(answer: _Answer, result: Any, options: TritonOptions) -> str:
    """Record one response's token counts; its new text (all of a delta, the rest of a
    cumulative text)."""
    completion = _count(result, options.outputs.get("completion_tokens"))
    if completion is not None:
        answer.completion_tokens = (answer.completion_tokens or 0) + completion
    prompt = _count(result, options.outputs.get("prompt_tokens"))
    if prompt is not None:
        answer.prompt_tokens = max(answer.prompt_tokens or 0, prompt)
    text = _text(result, options.outputs.get("text"))
    if options.stream_output == "cumulative" and text:
        previous, answer.raw = answer.raw, text
        text = text[len(previous) :] if text.startswith(previous) else text
    return text


def _text(result: Any, name: str | None) -> str:
    if name is None:
        return ""
    array = result.as_numpy(name)
    if array is None:  # e.g. the empty final response of a decoupled model
        return ""
    pieces = []
    for item in np.asarray(array).ravel():
        pieces.append(item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item))
    return "".join(pieces)


def _count(result: Any, name: str | None) -> int | None:
    if name is None:
        return None
    array = result.as_numpy(name)
    if array is None or np.asarray(array).size == 0:
        return None
    return int(np.asarray(array).sum())


def _partial_stop(text: str, stops: list[str]) -> int:
    """The length of the longest end of `text` that begins some stop sequence."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


# --- model metadata ----------------------------------------------------------------------------
def _read_model(metadata: dict[str, Any], config: dict[str, Any]) -> _Model:
    def tensors(items: list[dict[str, Any]]) -> dict[str, _Tensor]:
        return {
            str(item["name"]): _Tensor(
                str(item["datatype"]), tuple(int(size) for size in item.get("shape", []))
            )
            for item in items
        }

    policy = config.get("model_transaction_policy") or {}
    return _Model(
        inputs=tensors(metadata.get("inputs", [])),
        outputs=tensors(metadata.get("outputs", [])),
        max_batch_size=int(config.get("max_batch_size") or 0),
        decoupled=bool(policy.get("decoupled", False)),
    )


def _check_tensors(model: _Model, options: TritonOptions, target: Target) -> None:
    for kind, mapping, tensors in (
        ("inputs", options.inputs, model.inputs),
        ("outputs", options.outputs, model.outputs),
    ):
        for field_name, tensor in mapping.items():
            if tensor not in tensors:
                raise EngineError(
                    f"The Triton model {target.engine_model!r} has no {kind[:-1]} {tensor!r} "
                    f"(options.{kind}.{field_name}); it has: {', '.join(sorted(tensors))}."
                )


# --- errors ------------------------------------------------------------------------------------
def _classify(error: InferenceServerException | grpc.RpcError, target: Target) -> TillerError:
    if isinstance(error, InferenceServerException):
        status = str(error.status() or "")
        message = str(error.message() or "")
    else:  # a gRPC error tritonclient let through (reading a stream)
        code, details = getattr(error, "code", None), getattr(error, "details", None)
        status = str(code()) if callable(code) else ""
        message = str(details() if callable(details) else error)
    code_name = status.removeprefix("StatusCode.")
    detail = _short(message)
    where = f"deployment {target.deployment!r}"
    lowered = message.lower()
    if any(h in lowered for h in _CONTEXT_HINTS):  # the LLM backends' over-long prompt
        return ContextLengthExceeded(f"The model engine rejected the prompt: {detail}")
    if code_name == "NOT_FOUND" or (not code_name and any(h in lowered for h in _NOT_FOUND_HINTS)):
        return EngineError(f"Triton has no model {target.engine_model!r} ({where}): {detail}")
    if code_name in _REQUEST_STATUSES or (
        not code_name and any(h in lowered for h in _REQUEST_HINTS)
    ):
        return InvalidRequest(f"The model engine rejected the request: {detail}")
    if code_name == "UNIMPLEMENTED":
        return EngineError(
            f"Triton cannot serve this call for {where} (is options.decoupled right?): {detail}"
        )
    if code_name == "UNAVAILABLE" and any(h in lowered for h in _UNREACHABLE_HINTS):
        return EngineUnreachable(f"Cannot reach the model engine for {where}: {detail}")
    if code_name in _RETRYABLE or not code_name:
        # No status: the model failed inside its stream.
        return EngineUnavailable(f"The model engine for {where} failed: {detail}")
    return EngineError(f"The model engine for {where} answered {code_name}: {detail}")


def _short(message: str) -> str:
    """The line that says what went wrong (a Python model's traceback ends with it)."""
    lines = message.strip().splitlines()
    if "Traceback (most recent call last)" in message:
        causes = [
            line
            for line in lines
            if not _TRACEBACK_NOISE.match(line) and not line.endswith("(most recent call last):")
        ]
        if causes:
            return causes[-1][:300]
    return (lines[0] if lines else "no details")[:300]
