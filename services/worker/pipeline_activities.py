"""The pipelines' own activities, on the `tiller.pipelines` task queue every worker polls:
resolving a step's model through the router, and writing an answer or an error the workflow
made itself to the client's stream."""

from __future__ import annotations

import dataclasses
from typing import Any

import grpc
from redis.asyncio import Redis
from temporalio import activity

from tiller.common.errors import InvalidRequest, TillerError
from tiller.common.sealing import Sealer
from tiller.contract.answer_stream import PUBLISH_FENCE, Delivered, EventWriter
from tiller.contract.events import Done, Failed, Publication
from tiller.contract.names import PUBLISH_ACTIVITY, ROUTE_ACTIVITY
from tiller.contract.routes import StepRoute
from tiller.protos.router.v1 import router_pb2, router_pb2_grpc


class PipelineActivities:
    def __init__(
        self,
        router: router_pb2_grpc.RouterStub,
        redis: Redis,
        event_ttl_seconds: int,
        rpc_timeout_seconds: float = 5.0,
        *,
        sealer: Sealer,
    ) -> None:
        self.router = router
        self.sealer = sealer
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
        return dataclasses.asdict(StepRoute.of(route))

    @activity.defn(name=PUBLISH_ACTIVITY)
    async def publish(self, payload: dict[str, Any]) -> None:
        """Write the answer (its text, then the done event) or the error to the client's
        stream, unless the stream has ended already (an earlier attempt of this one wrote it)."""
        publication = Publication.from_dict(payload)
        fence = PUBLISH_FENCE + activity.info().attempt
        writer = EventWriter(
            self.redis, publication.events_key, self.event_ttl, fence, sealer=self.sealer
        )
        delivered = Delivered.of(await writer.claim())
        if delivered.done is not None or delivered.error is not None:
            await writer.ended()
            return
        match publication.end:
            case Failed(error=error, spent=spent):
                await writer.error(error, spent)
            case Done(result=result):
                if not delivered.any:  # an earlier attempt may have written it before it died
                    await writer.delta(result.text, max(1, len(result.text.split())))
                await writer.done(result)
