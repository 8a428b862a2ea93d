"""The pipelines' own activities, on the `tiller.pipelines` task queue every worker polls:
resolving a step's model through the router, and writing an answer or an error the workflow
made itself to the client's stream."""

from __future__ import annotations

import dataclasses
from typing import Any

import grpc
from redis.asyncio import Redis
from temporalio import activity

from tiller.common import events
from tiller.common.errors import InvalidRequest, TillerError
from tiller.pipelines.steps import StepRoute
from tiller.protos.router.v1 import router_pb2, router_pb2_grpc
from tiller.worker.routes import defaults_of, retry_of, target_of
from tiller.worker.shared import (
    HEARTBEAT_TIMEOUT_SECONDS,
    PUBLISH_ACTIVITY,
    QUEUE_TIMEOUT_SECONDS,
    ROUTE_ACTIVITY,
)

# Above every engine attempt's fence (events.py): a pipeline's own write wins the stream.
PUBLISH_FENCE = 1_000_000


class PipelineActivities:
    def __init__(
        self,
        router: router_pb2_grpc.RouterStub,
        redis: Redis,
        event_ttl_seconds: int,
        rpc_timeout_seconds: float = 5.0,
    ) -> None:
        self.router = router
        self.redis = redis
        self.event_ttl = event_ttl_seconds
        self.rpc_timeout = rpc_timeout_seconds

    @activity.defn(name=ROUTE_ACTIVITY)
    async def route(self, model: str) -> dict[str, Any]:
        """A step model's route: its deployments, retry policy, timeouts, defaults."""
        try:
            route: router_pb2.Route = await self.router.Resolve(
                router_pb2.ResolveRequest(model=model), timeout=self.rpc_timeout
            )
        except grpc.aio.AioRpcError as error:
            raise TillerError.from_grpc(error).to_application_error() from None
        if route.pipeline.workflow:  # models.yaml refuses this; a file changed since may not
            raise InvalidRequest(
                f"The pipeline step model `{model}` is a pipeline itself; steps call engine "
                "models.",
                param="model",
            ).to_application_error()
        found = StepRoute(
            model=route.model,
            targets=[target_of(d, route.model) for d in (*route.deployments, *route.fallbacks)],
            retry=retry_of(route.retry),
            timeout_seconds=route.timeout_seconds,
            heartbeat_timeout_seconds=route.heartbeat_timeout_seconds or HEARTBEAT_TIMEOUT_SECONDS,
            queue_timeout_seconds=route.queue_timeout_seconds or QUEUE_TIMEOUT_SECONDS,
            defaults=defaults_of(route.defaults),
            system_prompt=route.system_prompt,
        )
        return dataclasses.asdict(found)

    @activity.defn(name=PUBLISH_ACTIVITY)
    async def publish(self, payload: dict[str, Any]) -> None:
        """Write `result` (the text, then the done event) or `error` to the client's stream,
        unless the stream has ended already (an earlier attempt of this one wrote it)."""
        fence = PUBLISH_FENCE + activity.info().attempt
        writer = events.EventWriter(self.redis, payload["events_key"], self.event_ttl, fence)
        delivered = events.Delivered.of(await writer.claim())
        if delivered.done is not None or delivered.error is not None:
            await writer.ended()
            return
        if "error" in payload:
            await writer.error(payload["error"])
            return
        result = payload["result"]
        if not delivered.any:  # an earlier attempt may have written the text before it died
            await writer.delta(result["text"], max(1, len(result["text"].split())))
        await writer.done(result)
