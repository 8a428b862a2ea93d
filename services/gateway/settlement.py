"""Settling finished requests with quota: lease releases and usage, batched.

Every admitted request ends with one settlement. A settlement waits up to HOLD_SECONDS for the
next admission call to carry it (gateway/admissions.py: that call settles before it admits, so
the lease is free for it); if none comes, one background task sends it, together with every
settlement that queued meanwhile or while a call was in flight. Quota applies a settlement once
per request id, so one whose call failed (quota or Redis away) is sent again, with backoff, for
up to RETRY_FOR_SECONDS: a restart of either does not leave leases held until they expire or
usage unrecorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc

from tiller.common import backoff, tracing
from tiller.common.lifecycle import service_task
from tiller.protos.quota.v1 import quota_pb2, quota_pb2_grpc

log = logging.getLogger(__name__)
MAX_BATCH = 512
HOLD_SECONDS = 0.02
RETRY_FOR_SECONDS = 900.0  # then give up: the leases have expired by then (quota's lease TTL)


class Settler:
    def __init__(self, quota: quota_pb2_grpc.QuotaStub, timeout_seconds: float) -> None:
        self.quota, self.timeout = quota, timeout_seconds
        self._pending: list[quota_pb2.Settlement] = []
        self._sender: asyncio.Task[None] | None = None
        self._failed: list[tuple[float, quota_pb2.Settlement]] = []  # (first failure, s)
        self._retrier: asyncio.Task[None] | None = None

    def settle(self, settlement: quota_pb2.Settlement) -> None:
        self._pending.append(settlement)
        if self._sender is None or self._sender.done():
            # The call goes on the trace of the request that started it.
            self._sender = service_task(self._send(HOLD_SECONDS, tracing.current_context()))

    async def send_now(self, settlement: quota_pb2.Settlement) -> None:
        """Settle one request now, on its own call; raises the call's error."""
        await self.quota.Settle(
            quota_pb2.SettleRequest(settlements=[settlement]), timeout=self.timeout
        )

    def take(self) -> list[quota_pb2.Settlement]:
        """Every pending settlement, for a call that carries them instead."""
        taken = self._pending[:MAX_BATCH]
        del self._pending[:MAX_BATCH]
        return taken

    def failed(self, batch: list[quota_pb2.Settlement], error: grpc.aio.AioRpcError) -> None:
        """A call carrying `batch` failed: send it again later (quota applies each once, so
        resending is safe whatever the failure; a refused batch is resent one by one)."""
        log.warning(
            "settling requests failed; retrying",
            extra={"requests": len(batch), "status": error.code().name},
        )
        now = time.monotonic()
        self._failed.extend((now, s) for s in batch)
        if self._retrier is None or self._retrier.done():
            self._retrier = service_task(self._retry())

    async def drain(self) -> None:
        """Send every queued settlement (shutdown); those quota cannot take now are lost."""
        if self._sender is not None and not self._sender.done():
            await self._sender
        if self._retrier is not None:
            self._retrier.cancel()
        self._pending.extend(s for _, s in self._failed)
        self._failed.clear()
        await self._send(0, retry=False)

    async def _send(self, hold: float, trace: Any = None, retry: bool = True) -> None:
        if hold:
            await asyncio.sleep(hold)
        while self._pending:
            batch = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
            try:
                with tracing.continuing(trace):
                    await self.quota.Settle(
                        quota_pb2.SettleRequest(settlements=batch), timeout=self.timeout
                    )
            except grpc.aio.AioRpcError as error:
                if retry:
                    self.failed(batch, error)
                else:
                    log.warning("settlements lost at shutdown", extra={"requests": len(batch)})

    async def _one_by_one(self, batch: list[quota_pb2.Settlement]) -> list[quota_pb2.Settlement]:
        """Quota refused a batch: send each alone, so one bad entry cannot sink the rest.
        Returns those to try again (quota was away by then)."""
        again = []
        for settlement in batch:
            try:
                await self.send_now(settlement)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    log.warning("settlement refused", extra={"request_id": settlement.request_id})
                else:
                    again.append(settlement)
        return again

    async def _retry(self) -> None:
        """Resend failed settlements with backoff; each stays queued until a call carried it."""
        waits = backoff.delays()
        while self._failed:
            await asyncio.sleep(next(waits))
            now = time.monotonic()
            kept = [(since, s) for since, s in self._failed if now - since <= RETRY_FOR_SECONDS]
            if len(kept) < len(self._failed):
                log.warning(
                    "settlements given up", extra={"requests": len(self._failed) - len(kept)}
                )
            self._failed = kept
            for start in range(0, len(kept), MAX_BATCH):
                batch = kept[start : start + MAX_BATCH]
                again: list[quota_pb2.Settlement] = []
                try:
                    await self.quota.Settle(
                        quota_pb2.SettleRequest(settlements=[s for _, s in batch]),
                        timeout=self.timeout,
                    )
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                        continue  # stays queued for the next round
                    again = await self._one_by_one([s for _, s in batch])
                sent = {id(s) for _, s in batch} - {id(s) for s in again}
                self._failed = [(t, s) for t, s in self._failed if id(s) not in sent]
