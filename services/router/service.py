"""The Router gRPC service: answers from the compiled routing table."""

from __future__ import annotations

import grpc

from tiller.common.errors import ModelNotFound
from tiller.contract.routes import retry_policy_of
from tiller.protos.router.v1 import router_pb2, router_pb2_grpc
from tiller.router import metrics
from tiller.router.table import Deployment, Model, RoutingTable


class RouterService(router_pb2_grpc.RouterServicer):
    def __init__(self, table: RoutingTable) -> None:
        self.table = table

    async def Resolve(
        self, request: router_pb2.ResolveRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.Route:
        try:
            model = self.table.resolve(request.model)
        except ModelNotFound:
            metrics.RESOLVES.labels("not_found").inc()
            raise
        metrics.RESOLVES.labels("found").inc()
        return router_pb2.Route(
            model=model.name,
            requested=request.model,
            deployments=[_deployment(d) for d in model.deployments],
            fallbacks=[_deployment(d) for d in self.table.fallback_deployments(model)],
            timeout_seconds=model.timeout_seconds,
            heartbeat_timeout_seconds=model.heartbeat_timeout_seconds,
            queue_timeout_seconds=model.queue_timeout_seconds,
            defaults=router_pb2.SamplingDefaults(**model.defaults.model_dump(exclude_none=True)),
            system_prompt=model.system_prompt or "",
            limits=router_pb2.ModelLimits(**model.limits.model_dump()),
            retry=retry_policy_of(model.retry),
            config_version=self.table.version,
            engine_parameters=self.table.engine_parameters(model),
            pipeline=router_pb2.Pipeline(
                workflow=model.pipeline.workflow, options_json=model.pipeline.options_json
            )
            if model.pipeline
            else None,
            pii=router_pb2.PiiSettings(
                policies=[
                    router_pb2.PiiPolicy(mode=p.mode, types=p.types)
                    for p in self.table.pii_policies(model)
                ],
                min_score=self.table.pii.min_score,
                recognizers_json=self.table.pii.recognizers_json,
            ),
        )

    async def ListModels(
        self, request: router_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.ListModelsResponse:
        return router_pb2.ListModelsResponse(
            models=[_model_info(m) for m in self.table.models.values()],
            config_version=self.table.version,
            pii_types=self.table.pii.types,
        )


def _deployment(d: Deployment) -> router_pb2.Deployment:
    return router_pb2.Deployment(
        name=d.name,
        adapter=d.adapter,
        endpoint=d.endpoint,
        engine_model=d.engine_model,
        task_queue=d.task_queue,
        max_concurrency=d.max_concurrency,
        model=d.model,
        resume=d.resume,
        options_json=d.options_json,
        endpoints=[
            router_pb2.Endpoint(
                url=e.url, max_concurrency=e.max_concurrency, weight=e.weight, drain=e.drain
            )
            for e in d.endpoints
        ],
        health=router_pb2.HealthPolicy(**d.health.model_dump()),
    )


def _model_info(m: Model) -> router_pb2.ModelInfo:
    return router_pb2.ModelInfo(
        id=m.name,
        aliases=list(m.aliases),
        owned_by=m.owned_by,
        created=m.created,
        deployments=[_deployment(d) for d in m.deployments],
    )
