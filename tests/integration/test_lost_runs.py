"""A request whose run Temporal no longer knows (history expired, a server that lost its
database) ends with a clear error instead of being waited on forever, unless its stream already
holds the answer."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.support import TEST_SEALER, Stack, gateway_settings
from tiller.common.errors import InternalError
from tiller.contract.answer_stream import EventWriter
from tiller.contract.events import Delta, Done, stream_key
from tiller.contract.results import InferenceResult, Usage
from tiller.gateway.background import QUEUED, Record
from tiller.gateway.inference import Inference
from tiller.gateway.upstreams import Upstreams


@pytest.fixture
async def inference(stack: Stack) -> AsyncIterator[Inference]:
    settings = gateway_settings(stack, key_prefix="test-lost:")
    upstreams = await Upstreams.connect(settings)
    gateway = Inference(upstreams, settings)
    yield gateway
    await gateway.close()
    await upstreams.close()


def unknown_run(kind: str) -> Record:
    request_id = f"chatcmpl-lost-{uuid.uuid4().hex}"
    return Record(
        request_id=request_id,
        key_id="0" * 16,
        model="demo",
        created=int(time.time()),
        kind=kind,  # type: ignore[arg-type]
        events_key=stream_key("test-lost:", request_id),
        include_usage=False,
        status=QUEUED,
    )


@pytest.mark.parametrize("kind", ["activity", "workflow"])
async def test_a_run_temporal_does_not_know_fails_instead_of_hanging(
    inference: Inference, kind: str
) -> None:
    call = inference.attach(unknown_run(kind))
    with pytest.raises(InternalError, match="no record of this request"):
        await asyncio.wait_for(call.result(), 10)


async def test_an_answer_already_in_the_stream_wins_over_a_lost_run(
    inference: Inference, stack: Stack
) -> None:
    record = unknown_run("activity")
    redis = Redis.from_url(stack.redis_url)
    writer = EventWriter(redis, record.events_key, 60, sealer=TEST_SEALER)
    await writer.delta("You said: hi")
    await writer.done(InferenceResult("You said: hi", "stop", Usage(1, 3)))
    await redis.aclose()
    call = inference.attach(record)
    seen = [e async for e in call.answer(after="0")]
    assert [type(e) for e in seen] == [Delta, Done]
