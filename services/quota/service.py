"""The Quota gRPC service. Redis unreachable means UNAVAILABLE: the gateway fails closed."""

from __future__ import annotations

import datetime
from collections.abc import Awaitable
from dataclasses import asdict
from typing import TypeVar

import grpc
from redis.exceptions import RedisError

from tiller.common.errors import InvalidRequest, NotFound, ServiceUnavailable, TillerError
from tiller.common.priorities import DEFAULT_PRIORITY
from tiller.protos.quota.v1 import quota_pb2, quota_pb2_grpc
from tiller.quota.admission import Admission, Admitted, Ask, Principal, Window
from tiller.quota.keys import KeyRecord, KeySpec, KeyStore, Limits, NewKey
from tiller.quota.usage import Ledger

T = TypeVar("T")
MAX_USAGE_DAYS = 366
# The most one request reserves (8 choices of 2^31 tokens, and a prompt): far from overflowing
# Redis's 64-bit counters, and exact in Lua's doubles.
MAX_RESERVATION = 2**40


class QuotaService(quota_pb2_grpc.QuotaServicer):
    def __init__(self, admission: Admission, ledger: Ledger, keys: KeyStore) -> None:
        self.admission, self.ledger, self.keys = admission, ledger, keys

    async def Authenticate(
        self, request: quota_pb2.AuthenticateRequest, context: grpc.aio.ServicerContext
    ) -> quota_pb2.Principal:
        return _principal(await _store(self.admission.authenticate(request.api_key)))

    async def Admit(
        self, request: quota_pb2.AdmitRequest, context: grpc.aio.ServicerContext
    ) -> quota_pb2.Admission:
        if not request.request_id:
            raise InvalidRequest("request_id is required", param="request_id")
        return _admission(await _store(self.admission.admit(_ask(request))))

    async def AdmitBatch(
        self, request: quota_pb2.AdmitBatchRequest, context: grpc.aio.ServicerContext
    ) -> quota_pb2.AdmitBatchResponse:
        if any(not r.request_id for r in request.requests):
            raise InvalidRequest("request_id is required", param="request_id")
        if request.settle_first:
            await _store(self.ledger.settle(request.settle_first))
        asks = [_ask(r) for r in request.requests]
        outcomes = await _store(self.admission.admit_many(asks)) if asks else []
        return quota_pb2.AdmitBatchResponse(
            outcomes=[
                quota_pb2.AdmitOutcome(error=o.to_status())
                if isinstance(o, TillerError)
                else quota_pb2.AdmitOutcome(admission=_admission(o))
                for o in outcomes
            ]
        )

    async def Settle(
        self, request: quota_pb2.SettleRequest, context: grpc.aio.ServicerContext
    ) -> quota_pb2.SettleResponse:
        if request.settlements:
            await _store(self.ledger.settle(request.settlements))
        return quota_pb2.SettleResponse()

    async def RenewLeases(
        self, request: quota_pb2.RenewLeasesRequest, context: grpc.aio.ServicerContext
    ) -> quota_pb2.RenewLeasesResponse:
        ttl_ms = self.admission.lease_ttl_ms
        if request.leases:
            await _store(self.ledger.renew(request.leases, ttl_ms))
        return quota_pb2.RenewLeasesResponse(ttl_seconds=ttl_ms / 1000)

    # --- administration ----------------------------------------------------------------------
    async def CreateKey(
        self, request: quota_pb2.CreateKeyRequest, context: grpc.aio.ServicerContext
    ) -> quota_pb2.CreatedKey:
        spec = _spec(request.spec)
        created = await _admin(self.keys.create(spec))
        return await self._created(created)

    async def ListKeys(
        self, request: quota_pb2.ListKeysRequest, context: grpc.aio.ServicerContext
    ) -> quota_pb2.ListKeysResponse:
        records = await _store(self.keys.list())
        return quota_pb2.ListKeysResponse(keys=[_key_info(r) for r in records])

    async def GetKey(
        self, request: quota_pb2.KeyRef, context: grpc.aio.ServicerContext
    ) -> quota_pb2.KeyInfo:
        return _key_info(await _admin(self.keys.get(request.id)))

    async def RevokeKey(
        self, request: quota_pb2.KeyRef, context: grpc.aio.ServicerContext
    ) -> quota_pb2.KeyInfo:
        return _key_info(await _admin(self.keys.revoke(request.id)))

    async def RotateKey(
        self, request: quota_pb2.KeyRef, context: grpc.aio.ServicerContext
    ) -> quota_pb2.CreatedKey:
        created, _ = await _admin(self.keys.rotate(request.id))
        return await self._created(created)

    async def PutTeam(
        self, request: quota_pb2.Team, context: grpc.aio.ServicerContext
    ) -> quota_pb2.Team:
        await _admin(self.keys.put_team(request.name, _limits(request.limits)))
        return request

    async def ListTeams(
        self, request: quota_pb2.ListTeamsRequest, context: grpc.aio.ServicerContext
    ) -> quota_pb2.ListTeamsResponse:
        teams = await _store(self.keys.teams())
        return quota_pb2.ListTeamsResponse(
            teams=[quota_pb2.Team(name=n, limits=_limits_pb(lim)) for n, lim in teams.items()]
        )

    async def GetUsage(
        self, request: quota_pb2.UsageRequest, context: grpc.aio.ServicerContext
    ) -> quota_pb2.UsageResponse:
        days = _days(request.from_day, request.to_day)
        rows = await _store(self.ledger.usage(days, request.key_id or None))
        return quota_pb2.UsageResponse(
            rows=[
                quota_pb2.UsageRow(
                    day=r.day, key_id=r.key_id, team=r.team, model=r.model, **r.counts
                )
                for r in rows
            ]
        )

    async def _created(self, created: NewKey) -> quota_pb2.CreatedKey:
        record = await _store(self.keys.get(created.key_id))
        return quota_pb2.CreatedKey(api_key=created.api_key, key=_key_info(record))


async def _store(call: Awaitable[T]) -> T:
    try:
        return await call
    except RedisError:
        raise ServiceUnavailable("The quota store is unavailable; request refused.") from None


async def _admin(call: Awaitable[T]) -> T:
    """An administration call: a bad field is INVALID_ARGUMENT, an unknown key NOT_FOUND."""
    try:
        return await _store(call)
    except LookupError as error:
        raise NotFound(str(error).strip("'\"")) from None
    except ValueError as error:
        field, _, problem = str(error).partition(": ")
        raise InvalidRequest(str(error), param=field if problem else None) from None


def _ask(request: quota_pb2.AdmitRequest) -> Ask:
    limits = request.model_limits
    return Ask(
        request.api_key,
        request.request_id,
        model=request.served_model or request.model,
        requested=request.model,
        reserve_tokens=min(max(request.reserve_tokens, 0), MAX_RESERVATION),
        model_rpm=limits.rpm,
        model_tpm=limits.tpm,
        model_concurrency=limits.concurrency,
    )


def _spec(spec: quota_pb2.KeySpec) -> KeySpec:
    try:
        limits = _limits(spec.limits)
    except ValueError as error:
        raise InvalidRequest(str(error), param="limits") from None
    return KeySpec(
        name=spec.name,
        role=spec.role or "member",
        owner=spec.owner,
        team=spec.team,
        models=tuple(spec.models),
        limits=limits,
        priority=spec.priority or DEFAULT_PRIORITY,
        expires_at=spec.expires_at,
        pii_policy=spec.pii_policy,
        pii_types=tuple(spec.pii_types),
    )


def _limits(limits: quota_pb2.Limits) -> Limits:
    return Limits.of({name: getattr(limits, name) for name in Limits.__dataclass_fields__})


def _limits_pb(limits: Limits) -> quota_pb2.Limits:
    return quota_pb2.Limits(**asdict(limits))


def _key_info(record: KeyRecord) -> quota_pb2.KeyInfo:
    spec = record.spec
    return quota_pb2.KeyInfo(
        id=record.key_id,
        spec=quota_pb2.KeySpec(
            name=spec.name,
            role=spec.role,
            owner=spec.owner,
            team=spec.team,
            models=list(spec.models),
            limits=_limits_pb(spec.limits),
            priority=spec.priority,
            expires_at=spec.expires_at,
            pii_policy=spec.pii_policy,
            pii_types=list(spec.pii_types),
        ),
        created=record.created,
        revoked=record.revoked,
        expired=record.expired,
    )


def _days(first: str, last: str) -> list[str]:
    """The UTC days from `first` to `last` (YYYYMMDD, inclusive; today when unset)."""
    try:
        today = datetime.datetime.now(datetime.UTC).date()
        start = datetime.datetime.strptime(first, "%Y%m%d").date() if first else today
        end = datetime.datetime.strptime(last, "%Y%m%d").date() if last else start
    except ValueError:
        raise InvalidRequest("days are YYYY-MM-DD or YYYYMMDD", param="from") from None
    count = (end - start).days + 1
    if not 1 <= count <= MAX_USAGE_DAYS:
        raise InvalidRequest(f"1 to {MAX_USAGE_DAYS} days, in order", param="to")
    return [(start + datetime.timedelta(days=i)).strftime("%Y%m%d") for i in range(count)]


def _window(window: Window) -> quota_pb2.RateLimit:
    return quota_pb2.RateLimit(
        limit=window.limit, remaining=window.remaining, reset_seconds=window.reset_seconds
    )


def _admission(admitted: Admitted) -> quota_pb2.Admission:
    return quota_pb2.Admission(
        principal=_principal(admitted.principal),
        requests=_window(admitted.requests),
        tokens=_window(admitted.tokens),
    )


def _principal(p: Principal) -> quota_pb2.Principal:
    return quota_pb2.Principal(
        key_id=p.key_id,
        name=p.name,
        role=p.role,
        priority=p.priority,
        team=p.team,
        models=list(p.models),
        pii_policy=p.pii_policy,
        pii_types=list(p.pii_types),
    )
