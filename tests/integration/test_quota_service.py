"""The quota service over real gRPC, against the real Redis the stack started."""

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

from tests.support import Stack, closed_port, free_port, internal_channel, tls_dir_of_tests
from tiller.common.errors import AuthenticationFailed, RateLimited, ServiceUnavailable, TillerError
from tiller.contract.keys import digest
from tiller.gateway.admissions import Admitter
from tiller.gateway.leases import LeaseKeeper
from tiller.gateway.settlement import Settler
from tiller.protos.quota.v1 import quota_pb2, quota_pb2_grpc
from tiller.quota.keys import KeyStore, QuotaLayout
from tiller.quota.server import create_server
from tiller.quota.settings import QuotaSettings
from tiller.quota.usage import Ledger, UsageRow


@dataclass
class Quota:
    stub: quota_pb2_grpc.QuotaStub
    store: KeyStore
    redis: Redis
    prefix: str

    async def admit(self, api_key: str, request_id: str | None = None) -> quota_pb2.Admission:
        request = quota_pb2.AdmitRequest(
            api_key=api_key, request_id=request_id or uuid.uuid4().hex, model="demo"
        )
        try:
            admission: quota_pb2.Admission = await self.stub.Admit(request, timeout=5)
            return admission
        except grpc.aio.AioRpcError as error:
            raise TillerError.from_grpc(error) from None

    async def usage(self, key_id: str) -> list[UsageRow]:
        today = time.strftime("%Y%m%d", time.gmtime())
        return await Ledger(self.redis, self.prefix).usage([today], key_id)


def ask(api_key: str, request_id: str, model: str = "demo", **extra: Any) -> quota_pb2.AdmitRequest:
    return quota_pb2.AdmitRequest(api_key=api_key, request_id=request_id, model=model, **extra)


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
    async with internal_channel(settings.address, "quota", "gateway") as ch:
        yield Quota(quota_pb2_grpc.QuotaStub(ch), KeyStore(redis, prefix), redis, prefix)
    await server.stop(0)
    await redis.aclose()


async def stored_values(redis: Redis, prefix: str) -> list[bytes]:
    found = []
    async for key in redis.scan_iter(match=f"{prefix}*"):
        found.append(key)
        if await redis.type(key) == b"hash":
            for field, value in (await redis.hgetall(key)).items():
                found += [field, value]
    return found


async def test_keys_are_stored_only_as_hashes(quota: Quota) -> None:
    new = await quota.store.issue("alice", rpm=10)
    admission = await quota.admit(new.api_key)
    assert admission.principal.name == "alice" and admission.principal.role == "member"
    stored = b" ".join(await stored_values(quota.redis, quota.prefix))
    assert new.api_key.encode() not in stored
    assert digest(new.api_key).encode() in stored


async def test_unknown_and_missing_keys_are_unauthenticated(quota: Quota) -> None:
    with pytest.raises(AuthenticationFailed):
        await quota.admit("tk-not-a-real-key")
    with pytest.raises(AuthenticationFailed, match="didn't provide"):
        await quota.admit("")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await quota.stub.Authenticate(quota_pb2.AuthenticateRequest(api_key="nope"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_rpm_limit_holds_exactly_under_concurrency(quota: Quota) -> None:
    new = await quota.store.issue("bursty", rpm=5)
    outcomes = await asyncio.gather(
        *(quota.admit(new.api_key) for _ in range(30)), return_exceptions=True
    )
    admitted = [o for o in outcomes if isinstance(o, quota_pb2.Admission)]
    limited = [o for o in outcomes if isinstance(o, RateLimited)]
    assert len(admitted) == 5 and len(limited) == 25
    assert sorted(a.requests.remaining for a in admitted) == [0, 1, 2, 3, 4]
    assert all(a.requests.limit == 5 for a in admitted)
    assert all(0 < (error.retry_after or 0) <= 60 for error in limited)
    assert "requests per minute" in limited[0].message


async def test_concurrency_leases_are_taken_and_released(quota: Quota) -> None:
    new = await quota.store.issue("parallel", concurrency=2)
    await quota.admit(new.api_key, "r1")
    await quota.admit(new.api_key, "r2")
    with pytest.raises(RateLimited, match="concurrent"):
        await quota.admit(new.api_key, "r3")
    failed = quota_pb2.Settlement(key_id=new.key_id, request_id="r1")  # released, not counted
    done = quota_pb2.Settlement(
        key_id=new.key_id,
        request_id="r2",
        model="demo",
        completed=True,
        prompt_tokens=3,
        completion_tokens=4,
    )
    await quota.stub.Settle(quota_pb2.SettleRequest(settlements=[failed, done]), timeout=5)
    await quota.admit(new.api_key, "r4")
    await quota.admit(new.api_key, "r5")
    (row,) = await quota.usage(new.key_id)
    assert row.model == "demo"
    assert row.counts == {"requests": 1, "prompt_tokens": 3, "completion_tokens": 4}


async def test_a_settlement_with_a_bad_key_id_writes_nothing(quota: Quota) -> None:
    new = await quota.store.issue("careful", concurrency=1)
    await quota.admit(new.api_key, "r1")
    good = quota_pb2.Settlement(key_id=new.key_id, request_id="r1")
    bad = quota_pb2.Settlement(key_id="not a key id", request_id="r2")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await quota.stub.Settle(quota_pb2.SettleRequest(settlements=[good, bad]), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(RateLimited, match="concurrent"):
        await quota.admit(new.api_key, "r3")  # r1's lease is still held


async def test_a_new_bootstrap_admin_key_retires_the_old_one(quota: Quota) -> None:
    await quota.store.install_bootstrap_admin("tk-first-admin", rpm=0)
    assert (await quota.admit("tk-first-admin")).principal.role == "admin"
    await quota.store.install_bootstrap_admin("tk-second-admin", rpm=0)
    assert (await quota.admit("tk-second-admin")).principal.role == "admin"
    with pytest.raises(AuthenticationFailed):
        await quota.admit("tk-first-admin")


async def test_redis_down_fails_closed() -> None:
    settings = QuotaSettings(
        port=free_port(),
        redis_url=f"redis://127.0.0.1:{closed_port()}/0",
        redis_timeout_seconds=0.5,
        internal_tls_dir=tls_dir_of_tests(),
    )
    redis = Redis.from_url(settings.redis_url, socket_connect_timeout=0.5)
    server = create_server(settings, redis)
    await server.start()
    try:
        async with internal_channel(settings.address, "quota", "gateway") as ch:
            stub = quota_pb2_grpc.QuotaStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Admit(quota_pb2.AdmitRequest(api_key="k", request_id="r"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert type(TillerError.from_grpc(caught.value)) is ServiceUnavailable
    finally:
        await server.stop(0)
        await redis.aclose()


async def test_a_batch_settles_first_then_admits_each_request_on_its_own(quota: Quota) -> None:
    new = await quota.store.issue("batched", concurrency=1)
    await quota.admit(new.api_key, "held")

    def admit(api_key: str, request_id: str) -> quota_pb2.AdmitRequest:
        return quota_pb2.AdmitRequest(api_key=api_key, request_id=request_id, model="demo")

    reply = await quota.stub.AdmitBatch(
        quota_pb2.AdmitBatchRequest(
            # "held" is released before the batch admits: "next" fits, "third" does not.
            settle_first=[quota_pb2.Settlement(key_id=new.key_id, request_id="held")],
            requests=[
                admit(new.api_key, "next"),
                admit("tk-not-a-key", "stranger"),
                admit(new.api_key, "third"),
            ],
        ),
        timeout=5,
    )
    first, stranger, third = reply.outcomes
    assert first.admission.principal.key_id == new.key_id
    errors = [TillerError.from_status(o.error) for o in (stranger, third)]
    assert type(errors[0]) is AuthenticationFailed
    assert type(errors[1]) is RateLimited and "concurrent" in errors[1].message
    assert errors[1].retry_after is not None


async def test_a_batch_admits_lines_by_key_id_against_the_key_own_limits(quota: Quota) -> None:
    new = await quota.store.issue("lines", rpm=2)
    reply = await quota.stub.AdmitBatch(
        quota_pb2.AdmitBatchRequest(
            requests=[
                ask("", "line-0", key_id=new.key_id),
                ask("", "line-1", key_id=new.key_id),
                ask(new.api_key, "live"),  # the key's third request this minute, by its secret
                ask("", "stray", key_id="0" * 16),  # well formed, but no key has it
            ]
        ),
        timeout=5,
    )
    first, second, live, stray = reply.outcomes
    assert [o.admission.principal.key_id for o in (first, second)] == [new.key_id] * 2
    assert (second.admission.requests.limit, second.admission.requests.remaining) == (2, 0)
    assert live.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert type(TillerError.from_status(live.error)) is RateLimited
    assert stray.error.code == grpc.StatusCode.UNAUTHENTICATED.value[0]


async def test_an_admission_whose_caller_left_gives_its_lease_back(quota: Quota) -> None:
    new = await quota.store.issue("impatient", concurrency=1)
    settler = Settler(quota.stub, timeout_seconds=5)
    admitter = Admitter(quota.stub, settler, timeout_seconds=5)
    waiting = asyncio.create_task(admitter.admit(ask(new.api_key, "gone")))
    await asyncio.sleep(0)  # the batch is on its way
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # The admission landed after the caller left, and was settled.
    await asyncio.wait_for(settler.drain(), 10)
    admitted = await asyncio.wait_for(admitter.admit(ask(new.api_key, "next")), 10)
    assert admitted.principal.key_id == new.key_id


async def test_the_admission_carries_the_key_priority_class(quota: Quota) -> None:
    urgent = await quota.store.issue("urgent", priority=1)
    assert (await quota.admit(urgent.api_key)).principal.priority == 1
    plain = await quota.store.issue("plain")
    assert (await quota.admit(plain.api_key)).principal.priority == 3
    with pytest.raises(ValueError, match="priority"):
        await quota.store.issue("impossible", priority=9)


async def test_admission_survives_redis_forgetting_its_script(quota: Quota) -> None:
    new = await quota.store.issue("after-a-restart", concurrency=5)
    await quota.admit(new.api_key, "before")
    await quota.redis.script_flush()  # as a Redis restart without persistence would
    assert (await quota.admit(new.api_key, "after")).principal.key_id == new.key_id
    held = f"{QuotaLayout(quota.prefix).base}conc:k:{new.key_id}"
    leases = await quota.redis.zrange(held, 0, -1)
    assert sorted(leases) == [b"after", b"before"]  # admitted once each, not twice


async def test_settling_twice_counts_the_usage_once(quota: Quota) -> None:
    new = await quota.store.issue("resent", concurrency=1)
    await quota.admit(new.api_key, "once")
    done = quota_pb2.Settlement(
        key_id=new.key_id, request_id="once", model="demo", completed=True, completion_tokens=7
    )
    for _ in range(2):  # a gateway resends a settlement whose first call seemed to fail
        await quota.stub.Settle(quota_pb2.SettleRequest(settlements=[done]), timeout=5)
    (row,) = await quota.usage(new.key_id)
    assert row.counts == {"requests": 1, "prompt_tokens": 0, "completion_tokens": 7}


class FailsFirst:
    """Quota's stub, with its first Settle failing as if quota were restarting."""

    def __init__(self, stub: quota_pb2_grpc.QuotaStub) -> None:
        self.stub, self.calls = stub, 0

    async def Settle(
        self, request: quota_pb2.SettleRequest, timeout: float
    ) -> quota_pb2.SettleResponse:
        self.calls += 1
        if self.calls == 1:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "restarting"
            )
        reply: quota_pb2.SettleResponse = await self.stub.Settle(request, timeout=timeout)
        return reply


async def test_a_settlement_that_failed_is_sent_again(quota: Quota) -> None:
    new = await quota.store.issue("retried", concurrency=1)
    await quota.admit(new.api_key, "held")
    flaky = FailsFirst(quota.stub)
    settler = Settler(flaky, timeout_seconds=5)  # type: ignore[arg-type]
    settler.settle(quota_pb2.Settlement(key_id=new.key_id, request_id="held"))
    deadline = asyncio.get_running_loop().time() + 10
    while True:  # the retry comes after a backoff of half a second
        try:
            await quota.admit(new.api_key, "next")
            break
        except RateLimited:
            assert asyncio.get_running_loop().time() < deadline, "the lease was never released"
            await asyncio.sleep(0.1)
    assert flaky.calls == 2


async def test_a_renewed_lease_stays_and_an_abandoned_one_lapses(stack: Stack) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    settings = QuotaSettings(
        port=free_port(),
        redis_url=stack.redis_url,
        key_prefix=prefix,
        lease_ttl_seconds=1.0,
        internal_tls_dir=tls_dir_of_tests(),
    )
    redis = Redis.from_url(stack.redis_url)
    server = create_server(settings, redis)
    await server.start()
    try:
        async with internal_channel(settings.address, "quota", "gateway") as ch:
            quota = Quota(quota_pb2_grpc.QuotaStub(ch), KeyStore(redis, prefix), redis, prefix)
            new = await quota.store.issue("long-answer", concurrency=1)
            await quota.admit(new.api_key, "long")
            keeper = LeaseKeeper(quota.stub, timeout_seconds=5)
            keeper.hold("long", new.key_id)
            keeper.start()  # learns the 1 s TTL, then renews every third of it
            await asyncio.sleep(2.0)  # twice the TTL: only renewal keeps the slot taken
            assert keeper.interval == pytest.approx(1 / 3)
            with pytest.raises(RateLimited, match="concurrent"):
                await quota.admit(new.api_key, "second")
            await keeper.close()  # the gateway is gone: nobody renews
            await asyncio.sleep(1.2)
            assert (await quota.admit(new.api_key, "third")).principal.key_id == new.key_id
    finally:
        await server.stop(0)
        await redis.aclose()
