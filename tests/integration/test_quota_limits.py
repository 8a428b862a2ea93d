"""Every limit quota keeps, over real gRPC against the real Redis the stack started: tokens per
minute (reserved, then reconciled), team and model scopes, budgets, roles, allowed models,
expiry, revocation and rotation seen by another quota replica at once, and the usage ledger."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from redis.asyncio import Redis

from tests.support import Stack, free_port, internal_channel, tls_dir_of_tests
from tiller.common.errors import (
    AuthenticationFailed,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
    TillerError,
)
from tiller.protos.quota.v1 import quota_pb2, quota_pb2_grpc
from tiller.quota.keys import KeySpec, KeyStore, Limits
from tiller.quota.server import create_server
from tiller.quota.settings import QuotaSettings


@dataclass
class Quota:
    stubs: list[quota_pb2_grpc.QuotaStub]  # two replicas on one Redis
    store: KeyStore
    admin: tuple[tuple[str, str], ...] = ()  # the metadata of a call for an admin caller

    async def admit(self, api_key: str, replica: int = 0, **fields: Any) -> quota_pb2.Admission:
        fields.setdefault("model", "demo")
        request = quota_pb2.AdmitRequest(
            api_key=api_key, request_id=fields.pop("request_id", uuid.uuid4().hex), **fields
        )
        try:
            admission: quota_pb2.Admission = await self.stubs[replica].Admit(request, timeout=5)
            return admission
        except grpc.aio.AioRpcError as error:
            raise TillerError.from_grpc(error) from None

    async def settle(self, key_id: str, request_id: str, tokens: int, model: str = "demo") -> None:
        done = quota_pb2.Settlement(
            key_id=key_id,
            request_id=request_id,
            model=model,
            completed=True,
            prompt_tokens=tokens // 2,
            completion_tokens=tokens - tokens // 2,
        )
        await self.stubs[0].Settle(quota_pb2.SettleRequest(settlements=[done]), timeout=5)


@pytest.fixture
async def quota(stack: Stack) -> AsyncIterator[Quota]:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    redis = Redis.from_url(stack.redis_url)
    servers, stubs, channels = [], [], []
    for _ in range(2):
        settings = QuotaSettings(
            port=free_port(),
            redis_url=stack.redis_url,
            key_prefix=prefix,
            internal_tls_dir=tls_dir_of_tests(),
        )
        server = create_server(settings, redis)
        await server.start()
        servers.append(server)
        ch = internal_channel(settings.address, "quota", "gateway")
        channels.append(await ch.__aenter__())
        stubs.append(quota_pb2_grpc.QuotaStub(channels[-1]))
    store = KeyStore(redis, prefix)
    admin = await store.create(KeySpec("test-admin", role="admin"))
    yield Quota(stubs, store, (("x-tiller-actor-key", admin.api_key),))
    for ch in channels:
        await ch.close()
    for server in servers:
        await server.stop(0)
    await redis.aclose()


async def test_tokens_are_reserved_at_admission_and_reconciled_at_the_end(quota: Quota) -> None:
    key = await quota.store.issue("tokens", tpm=100)
    first = await quota.admit(key.api_key, request_id="a", reserve_tokens=60)
    assert (first.tokens.limit, first.tokens.remaining) == (100, 40)
    with pytest.raises(RateLimited, match="tokens per minute of this key: limit 100") as caught:
        await quota.admit(key.api_key, reserve_tokens=60)  # 60 + 60 would overshoot
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 60
    await quota.settle(key.key_id, "a", tokens=10)  # it used 10 of its 60
    second = await quota.admit(key.api_key, reserve_tokens=60)
    assert second.tokens.remaining == 30  # 10 used + 60 reserved


async def test_a_request_larger_than_the_tokens_limit_is_a_400(quota: Quota) -> None:
    key = await quota.store.issue("small", tpm=100)
    with pytest.raises(InvalidRequest, match="lower max_tokens") as caught:
        await quota.admit(key.api_key, reserve_tokens=101)
    assert caught.value.param == "max_tokens"


async def test_a_team_limit_is_shared_by_its_keys(quota: Quota) -> None:
    await quota.store.put_team("research", Limits(rpm=3))
    one = await quota.store.create(KeySpec("one", team="research"))
    two = await quota.store.create(KeySpec("two", team="research"))
    await quota.admit(one.api_key)
    await quota.admit(two.api_key)
    await quota.admit(one.api_key, replica=1)
    with pytest.raises(RateLimited, match="team 'research': limit 3"):
        await quota.admit(two.api_key, replica=1)


async def test_a_model_limit_holds_across_keys(quota: Quota) -> None:
    one, two = await quota.store.issue("one"), await quota.store.issue("two")
    limits = quota_pb2.Limits(concurrency=1)
    await quota.admit(one.api_key, served_model="big", model_limits=limits, request_id="held")
    with pytest.raises(RateLimited, match="concurrent requests for model 'big': limit 1"):
        await quota.admit(two.api_key, served_model="big", model_limits=limits)
    await quota.settle(one.key_id, "held", tokens=0, model="big")
    await quota.admit(two.api_key, served_model="big", model_limits=limits)


async def test_a_daily_budget_counts_reservations_then_real_usage(quota: Quota) -> None:
    key = await quota.store.issue("budget", tokens_per_day=100)
    await quota.admit(key.api_key, request_id="a", reserve_tokens=80)
    with pytest.raises(RateLimited, match="Token budget of this key used up: 100 tokens per day"):
        await quota.admit(key.api_key, reserve_tokens=30)
    await quota.settle(key.key_id, "a", tokens=20)
    await quota.admit(key.api_key, reserve_tokens=30)  # 20 spent + 30 reserved


async def test_nothing_is_counted_when_one_limit_refuses(quota: Quota) -> None:
    key = await quota.store.issue("all-or-nothing", rpm=10, tpm=50)
    await quota.admit(key.api_key, reserve_tokens=40, request_id="a")
    with pytest.raises(RateLimited):
        await quota.admit(key.api_key, reserve_tokens=40, request_id="b")  # tpm refuses
    third = await quota.admit(key.api_key, reserve_tokens=10)
    assert third.requests.remaining == 8  # a and this one: b was not counted


async def test_roles_and_allowed_models(quota: Quota) -> None:
    viewer = await quota.store.create(KeySpec("reader", role="viewer"))
    with pytest.raises(PermissionDenied, match="viewer role"):
        await quota.admit(viewer.api_key)
    scoped = await quota.store.create(KeySpec("scoped", models=("llama-*", "demo-latest")))
    await quota.admit(scoped.api_key, model="llama-3b", served_model="llama-3b")
    await quota.admit(scoped.api_key, model="demo-latest", served_model="demo")  # by its alias
    with pytest.raises(PermissionDenied, match="may not use the model `mistral`") as caught:
        await quota.admit(scoped.api_key, model="mistral", served_model="mistral")
    assert caught.value.param == "model"


async def test_expired_revoked_and_rotated_keys(quota: Quota) -> None:
    # At least a second ahead (int() of now+1 can be a hundredth of a second away), then past it.
    expires_at = int(time.time()) + 2
    soon = await quota.store.create(KeySpec("brief", expires_at=expires_at))
    await quota.admit(soon.api_key)
    await asyncio.sleep(expires_at - time.time() + 0.1)
    with pytest.raises(AuthenticationFailed, match="expired"):
        await quota.admit(soon.api_key, replica=1)

    kept = await quota.store.create(KeySpec("kept", team="", models=("demo",)))
    await quota.admit(kept.api_key, replica=1)
    started = time.monotonic()
    await quota.store.revoke(kept.key_id)  # through one replica's store...
    with pytest.raises(AuthenticationFailed):  # ...and the other refuses it at once
        await quota.admit(kept.api_key, replica=1)
    assert time.monotonic() - started < 1.0

    old = await quota.store.create(KeySpec("rotating", models=("demo",), limits=Limits(rpm=7)))
    new, record = await quota.store.rotate(old.key_id)
    with pytest.raises(AuthenticationFailed):
        await quota.admit(old.api_key)
    with pytest.raises(ValueError, match="revoked"):  # a revoked key cannot come back
        await quota.store.rotate(old.key_id)
    admitted = await quota.admit(new.api_key)
    assert record.spec.models == ("demo",) and admitted.requests.limit == 7


async def test_usage_is_recorded_by_key_team_and_model(quota: Quota) -> None:
    await quota.store.put_team("ops", Limits())
    key = await quota.store.create(KeySpec("ledger", team="ops"))
    await quota.admit(key.api_key, request_id="u1", reserve_tokens=10)
    await quota.settle(key.key_id, "u1", tokens=9)
    own = (("x-tiller-actor-key", key.api_key),)  # a key reads its own usage
    reply = await quota.stubs[1].GetUsage(
        quota_pb2.UsageRequest(key_id=key.key_id), timeout=5, metadata=own
    )
    (row,) = reply.rows
    assert (row.key_id, row.team, row.model, row.requests) == (key.key_id, "ops", "demo", 1)
    assert row.prompt_tokens + row.completion_tokens == 9


async def test_the_admin_calls_never_return_a_key_or_its_hash(quota: Quota) -> None:
    spec = quota_pb2.KeySpec(name="via-grpc", role="member", models=["demo"])
    admin = quota.admin
    created = await quota.stubs[0].CreateKey(
        quota_pb2.CreateKeyRequest(spec=spec), timeout=5, metadata=admin
    )
    assert created.api_key.startswith("tk-")
    listed = await quota.stubs[1].ListKeys(quota_pb2.ListKeysRequest(), timeout=5, metadata=admin)
    assert created.key.id in {k.id for k in listed.keys}
    assert created.api_key not in str(listed) and created.api_key[3:] not in str(listed)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await quota.stubs[0].GetKey(
            quota_pb2.KeyRef(id="0123456789abcdef"), timeout=5, metadata=admin
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    bad = quota_pb2.KeySpec(name="x", role="root")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await quota.stubs[0].CreateKey(
            quota_pb2.CreateKeyRequest(spec=bad), timeout=5, metadata=admin
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "role" in (caught.value.details() or "")


async def release(quota: Quota, key_id: str, request_id: str, refused: bool) -> None:
    """A settlement without usage: a request refused after admission, or one that ran and
    failed."""
    settlement = quota_pb2.Settlement(key_id=key_id, request_id=request_id, refused=refused)
    await quota.stubs[0].Settle(quota_pb2.SettleRequest(settlements=[settlement]), timeout=5)


async def test_a_refusal_after_admission_gives_back_everything_it_counted(quota: Quota) -> None:
    await quota.store.put_team("refusals", Limits(rpm=1))
    key = await quota.store.create(
        KeySpec("refused", team="refusals", limits=Limits(rpm=1, tpm=100, concurrency=1))
    )
    model = quota_pb2.Limits(rpm=1)
    fields: dict[str, Any] = {"reserve_tokens": 100, "served_model": "one", "model_limits": model}
    await quota.admit(key.api_key, request_id="a", **fields)
    with pytest.raises(RateLimited):
        await quota.admit(key.api_key, **fields)
    await release(quota, key.key_id, "a", refused=True)
    # Its key's, team's and model's requests per minute, its tokens and its lease: all back.
    again = await quota.admit(key.api_key, request_id="b", **fields)
    assert again.requests.remaining == 0 and again.tokens.remaining == 0
    # A request that ran and failed still counts against requests per minute.
    await release(quota, key.key_id, "b", refused=False)
    with pytest.raises(RateLimited, match="requests per minute"):
        await quota.admit(key.api_key, **fields)


async def test_an_admission_that_runs_after_its_release_counts_nothing(quota: Quota) -> None:
    """Redis froze while quota ran the admission; the gateway gave up and released the request,
    and that release reached Redis first: the admission, run later, must not count."""
    key = await quota.store.issue("late", rpm=1)
    await release(quota, key.key_id, "late", refused=True)
    with pytest.raises(TillerError, match="Admission failed"):
        await quota.admit(key.api_key, request_id="late")
    await quota.admit(key.api_key)  # the one request of the minute is still there


async def test_a_batch_line_is_admitted_by_its_key_id_against_the_same_limits(
    quota: Quota,
) -> None:
    key = await quota.store.issue("batch", rpm=3, concurrency=2)
    by_id = await quota.admit("", key_id=key.key_id, request_id="line-0")
    assert by_id.principal.key_id == key.key_id and by_id.requests.remaining == 2
    await quota.admit(key.api_key, request_id="live")
    with pytest.raises(RateLimited, match="concurrent requests for this key: limit 2"):
        await quota.admit("", key_id=key.key_id, replica=1)
    await quota.settle(key.key_id, "line-0", tokens=4)  # its lease goes with its settlement
    await quota.admit("", key_id=key.key_id, request_id="line-1", replica=1)
    await quota.settle(key.key_id, "live", tokens=0)  # a free slot, but three this minute
    with pytest.raises(RateLimited, match="requests per minute of this key: limit 3"):
        await quota.admit("", key_id=key.key_id)


async def test_a_key_id_is_refused_as_its_secret_would_be(quota: Quota) -> None:
    viewer = await quota.store.issue("viewer", role="viewer")
    with pytest.raises(PermissionDenied):
        await quota.admit("", key_id=viewer.key_id)
    revoked = await quota.store.issue("revoked")
    await quota.store.revoke(revoked.key_id)
    for key_id in (revoked.key_id, "0" * 16, "../not-an-id", ""):
        with pytest.raises(AuthenticationFailed):
            await quota.admit("", key_id=key_id)
    lapsed = await quota.store.create(KeySpec("lapsed", expires_at=int(time.time()) - 1))
    with pytest.raises(AuthenticationFailed, match="expired"):
        await quota.admit("", key_id=lapsed.key_id)
