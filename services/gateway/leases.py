"""Keeping the concurrency leases of the requests this gateway serves alive.

Quota gives each admitted request a lease that expires after its TTL (a minute by default). The
gateway renews the leases of every request it still serves, in one RenewLeases call every third
of that TTL; settling a request releases its lease. If the gateway dies, its requests' leases are
no longer renewed and their slots come back within one TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from tiller.common.lifecycle import service_task
from tiller.protos.quota.v1 import quota_pb2, quota_pb2_grpc

log = logging.getLogger(__name__)
FIRST_INTERVAL_SECONDS = 20.0  # until quota says its TTL
MAX_BATCH = 2048


class LeaseKeeper:
    def __init__(self, quota: quota_pb2_grpc.QuotaStub, timeout_seconds: float) -> None:
        self.quota, self.timeout = quota, timeout_seconds
        self.interval = FIRST_INTERVAL_SECONDS
        self.ttl_seconds: float | None = None  # quota's lease TTL, once it said
        self._held: dict[str, str] = {}  # request id -> key id
        self._task: asyncio.Task[None] | None = None
        self._soon = asyncio.Event()

    def hold(self, request_id: str, key_id: str, soon: bool = False) -> None:
        """Keep this lease alive; `soon`: renew now rather than at the next round (a request
        taken over from another gateway, whose lease may be close to lapsing)."""
        self._held[request_id] = key_id
        if soon:
            self._soon.set()

    def drop(self, request_id: str) -> None:
        self._held.pop(request_id, None)

    def start(self) -> None:
        if self._task is None:
            self._task = service_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def renew(self) -> None:
        """Renew every held lease now (one call at least, which also tells quota's TTL)."""
        held = [quota_pb2.Lease(key_id=k, request_id=r) for r, k in list(self._held.items())]
        for start in range(0, max(len(held), 1), MAX_BATCH):
            reply = await self.quota.RenewLeases(
                quota_pb2.RenewLeasesRequest(leases=held[start : start + MAX_BATCH]),
                timeout=self.timeout,
            )
            if reply.ttl_seconds > 0:
                self.ttl_seconds = reply.ttl_seconds
                self.interval = min(FIRST_INTERVAL_SECONDS, reply.ttl_seconds / 3)

    async def _run(self) -> None:
        learned = False  # the first call (even with nothing held) tells quota's lease TTL
        while True:
            if self._held or not learned:
                try:
                    await self.renew()
                    learned = True
                except grpc.aio.AioRpcError as error:
                    # Quota away: try again next round; a lease lapses only after a whole TTL.
                    log.warning("renewing leases failed", extra={"status": error.code().name})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._soon.wait(), self.interval)
            self._soon.clear()
