"""Key administration on a real quota over the internal plane: only the gateway, only for an
admin caller (whose key quota checks itself); key editing; and the audit log of every change,
written with it."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis

from tests.support import Stack, free_port, internal_channel, tls_dir_of_tests
from tiller.protos.quota.v1 import quota_pb2, quota_pb2_grpc
from tiller.quota.keys import KeySpec, KeyStore
from tiller.quota.server import create_server
from tiller.quota.settings import QuotaSettings

Metadata = tuple[tuple[str, str], ...]


@dataclass
class Quota:
    address: str
    stub: quota_pb2_grpc.QuotaStub  # as the gateway calls it
    store: KeyStore
    admin: Metadata  # a call for an admin caller, from 203.0.113.9
    admin_id: str
    member: Metadata  # a call for a member caller
    member_id: str


@pytest.fixture
async def quota(stack: Stack) -> AsyncIterator[Quota]:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    settings = QuotaSettings(
        port=free_port(),
        redis_url=stack.redis_url,
        key_prefix=prefix,
        internal_tls_dir=tls_dir_of_tests(),
    )
    redis = Redis.from_url(stack.redis_url)
    server = create_server(settings, redis)
    await server.start()
    store = KeyStore(redis, prefix)
    admin = await store.create(KeySpec("ops-lead", role="admin"))
    member = await store.create(KeySpec("alice"))
    async with internal_channel(settings.address, "quota", "gateway") as ch:
        yield Quota(
            settings.address,
            quota_pb2_grpc.QuotaStub(ch),
            store,
            (
                ("x-tiller-actor-key", admin.api_key),
                ("x-tiller-client-address", "203.0.113.9"),
                ("x-tiller-user-agent", "tiller-cli"),
            ),
            admin.key_id,
            (("x-tiller-actor-key", member.api_key),),
            member.key_id,
        )
    await server.stop(0)
    await redis.aclose()


def create(name: str, **spec: object) -> quota_pb2.CreateKeyRequest:
    return quota_pb2.CreateKeyRequest(spec=quota_pb2.KeySpec(name=name, **spec))  # type: ignore[arg-type]


async def test_administration_needs_an_admin_caller_whose_key_quota_checks(quota: Quota) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # the gateway's certificate alone
        await quota.stub.CreateKey(create("minted", role="admin"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await quota.stub.CreateKey(create("minted"), timeout=5, metadata=quota.member)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    forged = (("x-tiller-actor-key", "tk-" + "x" * 43),)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await quota.stub.ListKeys(quota_pb2.ListKeysRequest(), timeout=5, metadata=forged)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    created = await quota.stub.CreateKey(create("minted"), timeout=5, metadata=quota.admin)
    assert created.api_key.startswith("tk-")


async def test_a_key_reads_its_own_usage_and_no_one_elses(quota: Quota) -> None:
    own = quota_pb2.UsageRequest(key_id=quota.member_id)
    assert (await quota.stub.GetUsage(own, timeout=5, metadata=quota.member)).rows == []
    for other in (quota.admin_id, ""):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await quota.stub.GetUsage(
                quota_pb2.UsageRequest(key_id=other), timeout=5, metadata=quota.member
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_other_services_may_not_administer_even_for_an_admin(quota: Quota) -> None:
    """The worker's certificate is the deployment's, but quota serves only gateways."""
    async with internal_channel(quota.address, "quota", "worker") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await quota_pb2_grpc.QuotaStub(ch).CreateKey(
                create("minted"), timeout=5, metadata=quota.admin
            )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_an_update_changes_what_it_names_and_nothing_else(quota: Quota) -> None:
    created = await quota.stub.CreateKey(
        create("bob", owner="bob@example.com", models=["demo"], limits=quota_pb2.Limits(rpm=5)),
        timeout=5,
        metadata=quota.admin,
    )
    expires = int(time.time()) + 86_400
    update = quota_pb2.UpdateKeyRequest(
        id=created.key.id,
        spec=quota_pb2.KeySpec(
            models=["demo", "llama-*"],
            limits=quota_pb2.Limits(rpm=60, tpm=999),  # only rpm is named below
            expires_at=expires,
            owner="ignored, not named",
        ),
        fields=["models", "limits.rpm", "expires_at"],
    )
    info = await quota.stub.UpdateKey(update, timeout=5, metadata=quota.admin)
    assert list(info.spec.models) == ["demo", "llama-*"] and info.spec.expires_at == expires
    assert (info.spec.limits.rpm, info.spec.limits.tpm) == (60, 0)
    assert info.spec.owner == "bob@example.com" and info.id == created.key.id
    principal = await quota.stub.Authenticate(
        quota_pb2.AuthenticateRequest(api_key=created.api_key), timeout=5
    )
    assert list(principal.models) == ["demo", "llama-*"]  # in force at once


@pytest.mark.parametrize(
    ("fields", "spec", "says"),
    [
        (["revoked"], quota_pb2.KeySpec(), "not a setting"),
        ([], quota_pb2.KeySpec(), "at least one"),
        (["role"], quota_pb2.KeySpec(role="root"), "role"),
        (["team"], quota_pb2.KeySpec(team="nobody"), "no team"),
    ],
)
async def test_a_bad_update_is_refused_and_says_why(
    quota: Quota, fields: list[str], spec: quota_pb2.KeySpec, says: str
) -> None:
    update = quota_pb2.UpdateKeyRequest(id=quota.member_id, spec=spec, fields=fields)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await quota.stub.UpdateKey(update, timeout=5, metadata=quota.admin)
    assert caught.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    assert says in (caught.value.details() or "")


async def test_a_revoked_key_cannot_be_edited_back(quota: Quota) -> None:
    await quota.stub.RevokeKey(
        quota_pb2.KeyRef(id=quota.member_id), timeout=5, metadata=quota.admin
    )
    update = quota_pb2.UpdateKeyRequest(
        id=quota.member_id, spec=quota_pb2.KeySpec(name="back"), fields=["name"]
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await quota.stub.UpdateKey(update, timeout=5, metadata=quota.admin)
    assert "revoked" in (caught.value.details() or "")


async def test_every_change_is_in_the_audit_log_with_who_and_from_where(quota: Quota) -> None:
    admin = quota.admin
    await quota.stub.PutTeam(
        quota_pb2.Team(name="research", limits=quota_pb2.Limits(rpm=600)), timeout=5, metadata=admin
    )
    created = await quota.stub.CreateKey(
        create("carol", team="research"), timeout=5, metadata=admin
    )
    key_id = created.key.id
    await quota.stub.UpdateKey(
        quota_pb2.UpdateKeyRequest(
            id=key_id,
            spec=quota_pb2.KeySpec(limits=quota_pb2.Limits(rpm=30)),
            fields=["limits.rpm"],
        ),
        timeout=5,
        metadata=admin,
    )
    rotated = await quota.stub.RotateKey(quota_pb2.KeyRef(id=key_id), timeout=5, metadata=admin)
    await quota.stub.RevokeKey(quota_pb2.KeyRef(id=rotated.key.id), timeout=5, metadata=admin)

    log = await quota.stub.ListAudit(quota_pb2.AuditQuery(), timeout=5, metadata=admin)
    actions = [(e.action, e.key_id or e.team) for e in log.entries]
    assert actions == [
        ("key.revoke", rotated.key.id),
        ("key.rotate", key_id),
        ("key.update", key_id),
        ("key.create", key_id),
        ("team.put", "research"),
    ]  # newest first; the fixture's keys were made in the store directly, with no actor
    _revoke, rotate, update, create_, team = log.entries
    assert rotate.new_key_id == rotated.key.id and update.changes == {"limits.rpm": "30"}
    assert create_.changes["name"] == "carol" and create_.team == "research"
    assert team.changes["limits.rpm"] == "600"
    for entry in log.entries:
        assert (entry.actor_key_id, entry.actor_name) == (quota.admin_id, "ops-lead")
        assert (entry.client_address, entry.user_agent) == ("203.0.113.9", "tiller-cli")
        assert entry.gateway  # the connection it came over, as quota saw it
    assert created.api_key not in str(log) and rotated.api_key not in str(log)

    about = await quota.stub.ListAudit(
        quota_pb2.AuditQuery(key_id=rotated.key.id), timeout=5, metadata=admin
    )
    assert [e.action for e in about.entries] == ["key.revoke", "key.rotate"]
    window = await quota.stub.ListAudit(
        quota_pb2.AuditQuery(until_ms=update.at_ms, limit=1), timeout=5, metadata=admin
    )
    assert [e.action for e in window.entries] == ["key.create"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await quota.stub.ListAudit(quota_pb2.AuditQuery(), timeout=5, metadata=quota.member)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_plaintext_health_port_serves_health_and_nothing_else(stack: Stack) -> None:
    """For kubelet's gRPC probes, which speak no TLS."""
    settings = QuotaSettings(
        port=free_port(),
        health_port=free_port(),
        redis_url=stack.redis_url,
        internal_tls_dir=tls_dir_of_tests(),
    )
    redis = Redis.from_url(stack.redis_url)
    server = create_server(settings, redis)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{settings.health_port}") as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await quota_pb2_grpc.QuotaStub(ch).CreateKey(create("minted"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop(0)
        await redis.aclose()
