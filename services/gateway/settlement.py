"""Settling finished requests with quota: lease releases and usage, batched.

Every admitted request ends with one settlement. They are sent by one background task: the
settlements that queue up while a call is in flight go together in the next call, so a busy
gateway makes one Settle call per burst instead of one per request, and an idle one sends each
at once. A failed call is logged and dropped: leases expire on their own (the lease TTL).
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from tiller.protos.quota.v1 import quota_pb2, quota_pb2_grpc

log = logging.getLogger(__name__)
MAX_BATCH = 512


class Settler:
    def __init__(self, quota: quota_pb2_grpc.QuotaStub, timeout_seconds: float) -> None:
        self.quota, self.timeout = quota, timeout_seconds
        self._pending: list[quota_pb2.Settlement] = []
        self._sender: asyncio.Task[None] | None = None

    def settle(self, settlement: quota_pb2.Settlement) -> None:
        self._pending.append(settlement)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def drain(self) -> None:
        """Wait for every queued settlement to be sent (shutdown)."""
        while self._sender is not None and not self._sender.done():
            await self._sender

    async def _send(self) -> None:
        while self._pending:
            batch = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
            try:
                await self.quota.Settle(
                    quota_pb2.SettleRequest(settlements=batch), timeout=self.timeout
                )
            except grpc.aio.AioRpcError as error:
                log.warning(
                    "settling requests failed; their leases will expire",
                    extra={"requests": len(batch), "status": error.code().name},
                )
