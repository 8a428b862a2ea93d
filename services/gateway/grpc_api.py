"""The Inference gRPC service for internal callers: the same path as REST, in protobuf terms.

The key travels as metadata `authorization: Bearer <key>` (and an optional
`x-tiller-priority`, as over REST); the request id (the activity id) comes back as initial
metadata `x-request-id`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from tiller.common.model_access import model_allowed
from tiller.contract.events import Delta, Done, Failed
from tiller.contract.results import Usage
from tiller.gateway import metrics
from tiller.gateway.callers import PRIORITY_HEADER, bearer_key, requested_priority
from tiller.gateway.calls import Call
from tiller.gateway.inference import Inference
from tiller.gateway.protocol import ApiRequest, parse_chat, parse_completion, parse_embeddings
from tiller.protos.inference.v1 import inference_pb2, inference_pb2_grpc

_OPTIONAL = ("max_tokens", "temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")


class InferenceService(inference_pb2_grpc.InferenceServicer):
    """Errors become gRPC statuses in one interceptor (common/grpc_server.py), and each call is
    counted in another (metrics.RecordInference)."""

    def __init__(self, inference: Inference) -> None:
        self.inference = inference

    async def _begin(self, asked: ApiRequest, context: grpc.aio.ServicerContext) -> Call:
        metadata = dict(context.invocation_metadata() or ())
        api_key = bearer_key(metadata.get("authorization"))
        priority = requested_priority(metadata.get(PRIORITY_HEADER))
        return await self.inference.begin(
            api_key, asked, priority, metrics.CURRENT.get(), resumable=False
        )

    async def Generate(
        self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.GenerateResponse:
        call = await self._begin(parse_chat(_as_openai(request, False)), context)
        return await _whole(call, context)

    async def GenerateStream(
        self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inference_pb2.GenerateChunk]:
        call = await self._begin(parse_chat(_as_openai(request, True)), context)
        async for chunk in _chunks(call, context):
            yield chunk

    async def Complete(
        self, request: inference_pb2.CompleteRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.GenerateResponse:
        call = await self._begin(parse_completion(_as_openai(request, False)), context)
        return await _whole(call, context)

    async def CompleteStream(
        self, request: inference_pb2.CompleteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inference_pb2.GenerateChunk]:
        call = await self._begin(parse_completion(_as_openai(request, True)), context)
        async for chunk in _chunks(call, context):
            yield chunk

    async def Embed(
        self, request: inference_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.EmbedResponse:
        asked, _ = parse_embeddings({"model": request.model, "input": list(request.input)})
        call = await self._begin(asked, context)
        with call.owned():
            await _named(call, context)
            result = await call.result()
            call.complete(result.usage)
        return inference_pb2.EmbedResponse(
            id=call.request_id,
            model=call.model,
            data=[inference_pb2.Embedding(values=v) for v in result.embeddings or []],
            usage=_usage(result.usage),
        )

    async def ListModels(
        self, request: inference_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.ListModelsResponse:
        metadata = dict(context.invocation_metadata() or ())
        principal = await self.inference.authenticate(bearer_key(metadata.get("authorization")))
        listing = await self.inference.list_models()
        return inference_pb2.ListModelsResponse(
            models=[
                inference_pb2.Model(id=name, owned_by=m.owned_by, created=m.created)
                for m in listing.models
                for name in (m.id, *m.aliases)
                if model_allowed(principal.models, m.id, name)
            ]
        )


async def _named(call: Call, context: grpc.aio.ServicerContext) -> None:
    """The request id (its activity or workflow id), as initial metadata `x-request-id`."""
    await context.send_initial_metadata((("x-request-id", call.request_id),))


async def _whole(call: Call, context: grpc.aio.ServicerContext) -> inference_pb2.GenerateResponse:
    """A whole answer: Generate and Complete."""
    with call.owned():
        await _named(call, context)
        result = await call.result()
        call.complete(result.usage)
    return inference_pb2.GenerateResponse(
        id=call.request_id,
        model=call.model,
        text=result.text,
        finish_reason=result.finish_reason,
        usage=_usage(result.usage),
    )


async def _chunks(
    call: Call, context: grpc.aio.ServicerContext
) -> AsyncIterator[inference_pb2.GenerateChunk]:
    """A streamed answer: GenerateStream and CompleteStream."""
    with call.owned():  # the caller going away or a failure gives it up
        await _named(call, context)
        async for event in call.answer():
            if isinstance(event, Delta):
                yield inference_pb2.GenerateChunk(
                    id=call.request_id, model=call.model, delta=event.text
                )
            elif isinstance(event, Done):
                call.complete(event.result.usage)
                yield inference_pb2.GenerateChunk(
                    id=call.request_id,
                    model=call.model,
                    finish_reason=event.result.finish_reason,
                    usage=_usage(event.result.usage),
                )
            elif isinstance(event, Failed):
                raise event.exception()


def _as_openai(
    request: inference_pb2.GenerateRequest | inference_pb2.CompleteRequest, stream: bool
) -> dict[str, Any]:
    """The same body a REST caller would send, so both doors share one validation."""
    body: dict[str, Any] = {"model": request.model, "stream": stream}
    if isinstance(request, inference_pb2.CompleteRequest):
        body["prompt"] = request.prompt
    else:
        body["messages"] = [
            {"role": m.role, "content": m.content} | ({"name": m.name} if m.name else {})
            for m in request.messages
        ]
    if request.stop:
        body["stop"] = list(request.stop)
    body.update((f, getattr(request, f)) for f in _OPTIONAL if request.HasField(f))
    return body


def _usage(u: Usage) -> inference_pb2.Usage:
    return inference_pb2.Usage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.total_tokens,
    )
