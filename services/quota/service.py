"""The Quota gRPC service. Redis unreachable means UNAVAILABLE: the gateway fails closed."""

from __future__ import annotations

import datetime
from collections.abc import Awaitable
from dataclasses import asdict
from typing import Any, TypeVar

import grpc
from redis.exceptions import RedisError

from tiller.common.errors import (
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ServiceUnavailable,
    TillerError,
)
from tiller.common.priorities import DEFAULT_PRIORITY
from tiller.protos.quota.v1 import quota_pb2, quota_pb2_grpc
from tiller.quota.admin_gate import ACTOR
from tiller.quota.admission import Admission, Admitted, Ask, Principal, Window
from tiller.quota.audit import Entry
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
        created = await _admin(self.keys.create(spec, actor=ACTOR.get()))
        return await self._created(created)

    async def UpdateKey(
        self, request: quota_pb2.UpdateKeyRequest, context: grpc.aio.ServicerContext
    ) -> quota_pb2.KeyInfo:
        changes = _changes(request)
        return _key_info(await _admin(self.keys.update(request.id, changes, ACTOR.get())))

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
        return _key_info(await _admin(self.keys.revoke(request.id, ACTOR.get())))

    async def RotateKey(
        self, request: quota_pb2.KeyRef, context: grpc.aio.ServicerContext
    ) -> quota_pb2.CreatedKey:
        created, _ = await _admin(self.keys.rotate(request.id, ACTOR.get()))
        return await self._created(created)

    async def PutTeam(
        self, request: quota_pb2.Team, context: grpc.aio.ServicerContext
    ) -> quota_pb2.Team:
        await _admin(self.keys.put_team(request.name, _limits(request.limits), ACTOR.get()))
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
        actor = ACTOR.get()
        if actor.role != "admin" and request.key_id != actor.key_id:
            raise PermissionDenied("A key reads its own usage only; everyone's needs an admin key.")
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

    async def ListAudit(
        self, request: quota_pb2.AuditQuery, context: grpc.aio.ServicerContext
    ) -> quota_pb2.AuditLog:
        if request.limit < 0 or request.since_ms < 0 or request.until_ms < 0:
            raise InvalidRequest("limit, since and until are 0 or more", param="limit")
        entries = await _store(
            self.keys.audit.query(
                key_id=request.key_id,
                team=request.team,
                since_ms=request.since_ms,
                until_ms=request.until_ms,
                limit=request.limit,
            )
        )
        return quota_pb2.AuditLog(entries=[_audit_entry(e) for e in entries])

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
        key_id=request.key_id,
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


# What UpdateKey may change, by the name `fields` gives it.
_SETTINGS = ("name", "role", "owner", "team", "models", "priority", "expires_at", "pii")


def _changes(request: quota_pb2.UpdateKeyRequest) -> dict[str, Any]:
    """The settings `fields` names, with their new values from `spec`."""
    spec = request.spec
    changes: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for name in request.fields:
        if name.startswith("limits.") and name[7:] in Limits.__dataclass_fields__:
            limits[name[7:]] = getattr(spec.limits, name[7:])
        elif name == "pii":
            changes["pii_policy"], changes["pii_types"] = spec.pii_policy, tuple(spec.pii_types)
        elif name == "models":
            changes["models"] = tuple(spec.models)
        elif name == "priority":
            changes["priority"] = spec.priority or DEFAULT_PRIORITY
        elif name in _SETTINGS:
            changes[name] = getattr(spec, name)
        else:
            raise InvalidRequest(
                f"{name!r} is not a setting a key's update can change", param="fields"
            )
    if not changes and not limits:
        raise InvalidRequest("an update names at least one setting", param="fields")
    if limits:
        try:
            Limits.of(limits)
        except ValueError as error:
            raise InvalidRequest(str(error), param="limits") from None
        changes["limits"] = limits
    return changes


def _audit_entry(entry: Entry) -> quota_pb2.AuditEntry:
    actor = entry.actor
    return quota_pb2.AuditEntry(
        id=entry.id,
        at_ms=entry.at_ms,
        action=entry.action,
        key_id=entry.key_id,
        team=entry.team,
        actor_key_id=actor.key_id,
        actor_name=actor.name,
        client_address=actor.client_address,
        forwarded_for=actor.forwarded_for,
        user_agent=actor.user_agent,
        gateway=actor.gateway,
        changes=dict(entry.changes),
        new_key_id=entry.new_key_id,
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
