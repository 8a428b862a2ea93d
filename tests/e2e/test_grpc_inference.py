"""Internal callers over gRPC get the same answers and the same gatekeeping as REST callers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from tests.support import Stack
from tiller.common.grpc_client import channel
from tiller.protos.inference.v1 import inference_pb2, inference_pb2_grpc

REQUEST = inference_pb2.GenerateRequest(
    model="demo", messages=[inference_pb2.ChatMessage(role="user", content="Hello Tiller")]
)


@pytest.fixture
async def stub(stack: Stack) -> AsyncIterator[inference_pb2_grpc.InferenceStub]:
    async with channel(f"127.0.0.1:{stack.grpc_port}") as ch:
        yield inference_pb2_grpc.InferenceStub(ch)


def auth(stack: Stack) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {stack.admin_key}"),)


async def test_generate_and_generate_stream_give_the_rest_answer(
    stack: Stack, stub: inference_pb2_grpc.InferenceStub
) -> None:
    call = stub.Generate(REQUEST, metadata=auth(stack), timeout=30)
    reply = await call
    assert reply.text == "You said: Hello Tiller" and reply.finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
        2, 4, 6,
    )  # fmt: skip
    assert dict(await call.initial_metadata())["x-request-id"] == reply.id

    chunks = [c async for c in stub.GenerateStream(REQUEST, metadata=auth(stack), timeout=30)]
    assert "".join(c.delta for c in chunks) == reply.text
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage.total_tokens == 6
    assert all(c.id == chunks[0].id and c.id.startswith("chatcmpl-") for c in chunks)


async def test_list_models(stack: Stack, stub: inference_pb2_grpc.InferenceStub) -> None:
    reply = await stub.ListModels(
        inference_pb2.ListModelsRequest(), metadata=auth(stack), timeout=10
    )
    assert {"demo", "demo-latest"} <= {m.id for m in reply.models}


@pytest.mark.parametrize(
    ("metadata", "request_", "code"),
    [
        ((), REQUEST, grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer tk-wrong"),), REQUEST, grpc.StatusCode.UNAUTHENTICATED),
        (
            None,
            inference_pb2.GenerateRequest(model="nope", messages=REQUEST.messages),
            grpc.StatusCode.NOT_FOUND,
        ),
        (None, inference_pb2.GenerateRequest(model="demo"), grpc.StatusCode.INVALID_ARGUMENT),
        (
            None,
            inference_pb2.GenerateRequest(model="demo", messages=REQUEST.messages, max_tokens=0),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
async def test_errors_are_grpc_statuses(
    stack: Stack,
    stub: inference_pb2_grpc.InferenceStub,
    metadata: tuple[tuple[str, str], ...] | None,
    request_: inference_pb2.GenerateRequest,
    code: grpc.StatusCode,
) -> None:
    for method in (stub.Generate, stub.GenerateStream):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            call = method(
                request_, metadata=auth(stack) if metadata is None else metadata, timeout=30
            )
            if method is stub.GenerateStream:
                [c async for c in call]
            else:
                await call
        assert caught.value.code() == code


async def test_complete_and_complete_stream_give_the_rest_answer(
    stack: Stack, stub: inference_pb2_grpc.InferenceStub
) -> None:
    request = inference_pb2.CompleteRequest(model="demo", prompt="one two three", max_tokens=3)
    reply = await stub.Complete(request, metadata=auth(stack), timeout=30)
    assert (reply.text, reply.finish_reason) == ("You said: one", "length")
    assert reply.id.startswith("cmpl-") and reply.usage.completion_tokens == 3
    chunks = [c async for c in stub.CompleteStream(request, metadata=auth(stack), timeout=30)]
    assert "".join(c.delta for c in chunks) == reply.text
    assert chunks[-1].finish_reason == "length" and chunks[-1].usage.total_tokens == 6


async def test_embed_gives_the_rest_vectors(
    stack: Stack, stub: inference_pb2_grpc.InferenceStub
) -> None:
    request = inference_pb2.EmbedRequest(model="demo", input=["alpha", "beta gamma", "alpha"])
    reply = await stub.Embed(request, metadata=auth(stack), timeout=30)
    vectors = [list(e.values) for e in reply.data]
    assert len(vectors) == 3 and len(vectors[0]) == 8
    assert vectors[0] == vectors[2] != vectors[1]
    assert reply.usage.prompt_tokens == reply.usage.total_tokens == 4
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(inference_pb2.EmbedRequest(model="demo"), metadata=auth(stack))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input" in (caught.value.details() or "")


async def test_grpc_callers_meet_the_same_gatekeeping(
    stack: Stack, stub: inference_pb2_grpc.InferenceStub
) -> None:
    from redis.asyncio import Redis

    from tiller.quota.keys import KeySpec, KeyStore, Limits

    redis = Redis.from_url(stack.redis_url)
    try:
        store = KeyStore(redis, "tiller:")
        scoped = await store.create(KeySpec("grpc-scoped", models=("single",)))
        limited = await store.create(KeySpec("grpc-limited", limits=Limits(rpm=1)))
    finally:
        await redis.aclose()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Generate(REQUEST, metadata=(("authorization", f"Bearer {scoped.api_key}"),))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "may not use the model `demo`" in (caught.value.details() or "")
    as_limited = (("authorization", f"Bearer {limited.api_key}"),)
    await stub.Generate(REQUEST, metadata=as_limited, timeout=30)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Generate(REQUEST, metadata=as_limited, timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "requests per minute of this key: limit 1" in (caught.value.details() or "")
