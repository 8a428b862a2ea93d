"""The gateway's admitter releases a request quota may have counted although it was refused
(gateway/admissions.py): a `refused` settlement, which takes back its requests-per-minute entry
too. Quota's definite refusals (a limit, a key) counted nothing and are not released."""

from __future__ import annotations

from typing import Any

import pytest

from tiller.common.errors import RateLimited, ServiceUnavailable, TillerError
from tiller.contract.keys import key_id_of
from tiller.gateway.admissions import Admitter
from tiller.protos.quota.v1 import quota_pb2

API_KEY = "tk-test-admitter"


class FakeQuota:
    """Answers every admission with `error`."""

    def __init__(self, error: TillerError) -> None:
        self.error = error

    async def AdmitBatch(self, request: quota_pb2.AdmitBatchRequest, **_: Any) -> Any:
        outcome = quota_pb2.AdmitOutcome(error=self.error.to_status())
        return quota_pb2.AdmitBatchResponse(outcomes=[outcome for _ in request.requests])


class FakeSettler:
    def __init__(self) -> None:
        self.settled: list[quota_pb2.Settlement] = []

    def take(self) -> list[quota_pb2.Settlement]:
        return []

    def settle(self, settlement: quota_pb2.Settlement) -> None:
        self.settled.append(settlement)


async def refused_with(error: TillerError) -> list[quota_pb2.Settlement]:
    settler = FakeSettler()
    admitter = Admitter(FakeQuota(error), settler, 1.0)  # type: ignore[arg-type]
    with pytest.raises(type(error)):
        await admitter.admit(quota_pb2.AdmitRequest(api_key=API_KEY, request_id="r1"))
    return settler.settled


async def test_redis_failing_on_one_admission_releases_it_whole() -> None:
    settled = await refused_with(ServiceUnavailable("Admission failed; request refused."))
    assert settled == [
        quota_pb2.Settlement(key_id=key_id_of(API_KEY), request_id="r1", refused=True)
    ]


async def test_a_limit_refusal_counted_nothing_and_is_not_released() -> None:
    assert await refused_with(RateLimited("Rate limit reached", retry_after=1.0)) == []
