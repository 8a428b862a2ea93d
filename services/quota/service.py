"""The Quota gRPC service. Redis unreachable means UNAVAILABLE: the gateway fails closed."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import grpc
from redis.exceptions import RedisError

from tiller.common.errors import InvalidRequest, ServiceUnavailable, TillerError
from tiller.common.grpc_server import translate_errors
from tiller.protos.quota.v1 import quota_pb2, quota_pb2_grpc
from tiller.quota.admission import Admission, Admitted, Principal
from tiller.quota.usage import Ledger

T = TypeVar("T")


class QuotaService(quota_pb2_grpc.QuotaServicer):
    def __init__(self, admission: Admission, ledger: Ledger) -> None:
        self.admission, self.ledger = admission, ledger

    @translate_errors
    async def Authenticate(
        self, request: quota_pb2.AuthenticateRequest, context: grpc.aio.ServicerContext
    ) -> quota_pb2.Principal:
        return _principal(await _store(self.admission.authenticate(request.api_key)))

    @translate_errors
    async def Admit(
        self, request: quota_pb2.AdmitRequest, context: grpc.aio.ServicerContext
    ) -> quota_pb2.Admission:
        if not request.request_id:
            raise InvalidRequest("request_id is required", param="request_id")
        admitted = await _store(self.admission.admit(request.api_key, request.request_id))
        return _admission(admitted)

    @translate_errors
    async def AdmitBatch(
        self, request: quota_pb2.AdmitBatchRequest, context: grpc.aio.ServicerContext
    ) -> quota_pb2.AdmitBatchResponse:
        if any(not r.request_id for r in request.requests):
            raise InvalidRequest("request_id is required", param="request_id")
        if request.settle_first:
            await _store(self.ledger.settle(request.settle_first))
        pairs = [(r.api_key, r.request_id) for r in request.requests]
        outcomes = await _store(self.admission.admit_many(pairs)) if pairs else []
        return quota_pb2.AdmitBatchResponse(
            outcomes=[
                quota_pb2.AdmitOutcome(error=o.to_status())
                if isinstance(o, TillerError)
                else quota_pb2.AdmitOutcome(admission=_admission(o))
                for o in outcomes
            ]
        )

    @translate_errors
    async def Settle(
        self, request: quota_pb2.SettleRequest, context: grpc.aio.ServicerContext
    ) -> quota_pb2.SettleResponse:
        if request.settlements:
            await _store(self.ledger.settle(request.settlements))
        return quota_pb2.SettleResponse()

    @translate_errors
    async def RenewLeases(
        self, request: quota_pb2.RenewLeasesRequest, context: grpc.aio.ServicerContext
    ) -> quota_pb2.RenewLeasesResponse:
        ttl_ms = self.admission.lease_ttl_ms
        if request.leases:
            await _store(self.ledger.renew(request.leases, ttl_ms))
        return quota_pb2.RenewLeasesResponse(ttl_seconds=ttl_ms / 1000)


async def _store(call: Awaitable[T]) -> T:
    try:
        return await call
    except RedisError:
        raise ServiceUnavailable("The quota store is unavailable; request refused.") from None


def _admission(admitted: Admitted) -> quota_pb2.Admission:
    return quota_pb2.Admission(
        principal=_principal(admitted.principal),
        requests=quota_pb2.RateLimit(
            limit=admitted.rpm_limit,
            remaining=admitted.rpm_remaining,
            reset_seconds=admitted.rpm_reset_seconds,
        ),
    )


def _principal(p: Principal) -> quota_pb2.Principal:
    return quota_pb2.Principal(key_id=p.key_id, name=p.name, role=p.role, priority=p.priority)
