"""Settling finished requests with quota: lease releases and usage, batched.

Every admitted request ends with one settlement. A settlement waits up to HOLD_SECONDS for the
next admission call to carry it (gateway/admissions.py: that call settles before it admits, so
the lease is free for it); if none comes, one background task sends it, together with every
settlement that queued meanwhile or while a call was in flight. A failed call is logged and
dropped: leases expire on their own (the lease TTL).
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from tiller.protos.quota.v1 import quota_pb2, quota_pb2_grpc

log = logging.getLogger(__name__)
MAX_BATCH = 512
HOLD_SECONDS = 0.02


class Settler:
    def __init__(self, quota: quota_pb2_grpc.QuotaStub, timeout_seconds: float) -> None:
        self.quota, self.timeout = quota, timeout_seconds
        self._pending: list[quota_pb2.Settlement] = []
        self._sender: asyncio.Task[None] | None = None

    def settle(self, settlement: quota_pb2.Settlement) -> None:
        self._pending.append(settlement)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send(HOLD_SECONDS))

    def take(self) -> list[quota_pb2.Settlement]:
        """Every pending settlement, for a call that carries them instead."""
        taken = self._pending[:MAX_BATCH]
        del self._pending[:MAX_BATCH]
        return taken

    async def drain(self) -> None:
        """Send every queued settlement (shutdown)."""
        if self._sender is not None and not self._sender.done():
            await self._sender
        await self._send(0)

    async def _send(self, hold: float) -> None:
        if hold:
            await asyncio.sleep(hold)
        while self._pending:
            batch = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
            try:
                await self.quota.Settle(
                    quota_pb2.SettleRequest(settlements=batch), timeout=self.timeout
                )
            except grpc.aio.AioRpcError as error:
                dropped(len(batch), error)


def dropped(count: int, error: grpc.aio.AioRpcError) -> None:
    """Not retried: quota may have applied a call that timed out, and usage must not count
    twice. The leases expire on their own; the usage of these requests is not recorded."""
    log.warning(
        "settling requests failed; their leases will expire",
        extra={"requests": count, "status": error.code().name},
    )
