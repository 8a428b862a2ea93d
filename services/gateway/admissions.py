"""Admitting requests with quota, batched, with finished requests' settlements riding along.

Every request is admitted before it starts. One background task sends the admissions: those that
queue up while a call is in flight go together in the next `AdmitBatch` call, and the call first
settles whatever the settler has pending (releasing leases before counting new requests), so a
steady stream of requests costs quota one call per burst, not two calls per request. An idle
gateway sends each admission at once.

A request refused here after quota may have counted it (the call failed or timed out, Redis
failed on its script, or its caller left as it was admitted) is released: a `refused` settlement
takes back everything its admission counted, its place in requests per minute included.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from tiller.common import tracing
from tiller.common.errors import ServiceUnavailable, TillerError
from tiller.common.lifecycle import service_task
from tiller.contract.keys import key_id_of
from tiller.gateway.settlement import MAX_BATCH, Settler
from tiller.protos.quota.v1 import quota_pb2, quota_pb2_grpc

# A request, its caller's future, and its trace context (the batch's call joins the first's).
_Waiting = tuple[quota_pb2.AdmitRequest, "asyncio.Future[quota_pb2.Admission]", Any]


class Admitter:
    def __init__(
        self, quota: quota_pb2_grpc.QuotaStub, settler: Settler, timeout_seconds: float
    ) -> None:
        self.quota, self.settler, self.timeout = quota, settler, timeout_seconds
        self._pending: list[_Waiting] = []
        self._sender: asyncio.Task[None] | None = None

    async def admit(self, request: quota_pb2.AdmitRequest) -> quota_pb2.Admission:
        """The admission, or the TillerError quota refused it with."""
        future: asyncio.Future[quota_pb2.Admission] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future, tracing.current_context()))
        if self._sender is None or self._sender.done():
            self._sender = service_task(self._send())
        try:
            return await future
        except asyncio.CancelledError:
            # Admitted just as the caller left (the answer landed, the caller never resumed):
            # give the lease back.
            if future.done() and not future.cancelled() and future.exception() is None:
                self._release(future.result().principal.key_id, request.request_id)
            raise

    async def _send(self) -> None:
        while self._pending:
            batch = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
            settlements = self.settler.take()
            try:
                with tracing.continuing(batch[0][2]):
                    reply = await self.quota.AdmitBatch(
                        quota_pb2.AdmitBatchRequest(
                            requests=[request for request, _, _ in batch],
                            settle_first=settlements,
                        ),
                        timeout=self.timeout,
                    )
            except grpc.aio.AioRpcError as error:
                if settlements:
                    self.settler.failed(settlements, error)
                failure = TillerError.from_grpc(error)
                for request, future, _ in batch:
                    if not future.done():
                        future.set_exception(failure)
                    # Quota may have admitted it before the call failed (a timeout): release
                    # what it may hold, or its lease and reservation would outlive the request.
                    if request.api_key:
                        self._release(key_id_of(request.api_key), request.request_id)
                continue
            for (request, future, _), outcome in zip(batch, reply.outcomes, strict=True):
                self._resolve(request, future, outcome)

    def _release(self, key_id: str, request_id: str) -> None:
        """Give back all a request refused here may have been counted: its lease, its tokens and
        its place in requests per minute (quota does nothing where it counted nothing, and
        counts nothing if it runs the admission only later)."""
        self.settler.settle(
            quota_pb2.Settlement(key_id=key_id, request_id=request_id, refused=True)
        )

    def _resolve(
        self,
        request: quota_pb2.AdmitRequest,
        future: asyncio.Future[quota_pb2.Admission],
        outcome: quota_pb2.AdmitOutcome,
    ) -> None:
        if outcome.HasField("error"):
            error = TillerError.from_status(outcome.error)
            if not future.done():
                future.set_exception(error)
            # Redis failed on this admission alone: its script may have run, in part or whole.
            if isinstance(error, ServiceUnavailable) and request.api_key:
                self._release(key_id_of(request.api_key), request.request_id)
        elif future.done():  # the caller left while we asked: give the lease back
            self._release(outcome.admission.principal.key_id, request.request_id)
        else:
            future.set_result(outcome.admission)
