"""The gateway's batches: creating one (its record, then its workflow), reading and cancelling,
and the Temporal worker that runs the batch workflows and their activities on every gateway."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from tiller.common.errors import InvalidRequest, NotFound, ServiceUnavailable
from tiller.gateway.batches.activities import BatchActivities
from tiller.gateway.batches.live import LiveTraffic
from tiller.gateway.batches.shared import (
    BATCH_TASK_QUEUE,
    CANCEL_SIGNAL,
    CANCELLING,
    ENDPOINTS,
    IN_PROGRESS,
    VALIDATING,
    BatchJob,
    workflow_id,
)
from tiller.gateway.batches.store import Batch, BatchStore
from tiller.gateway.batches.workflow import BatchWorkflow
from tiller.gateway.file_store import FileStore
from tiller.gateway.inference import Inference

log = logging.getLogger(__name__)
WINDOWS = {"24h": 86_400}  # OpenAI's only completion window
MAX_METADATA = 16
RESTART_SECONDS = 5.0


class Batches:
    def __init__(self, inference: Inference, files: FileStore) -> None:
        settings = inference.settings
        self.inference, self.files = inference, files
        self.temporal: Client = inference.up.temporal
        self.store = BatchStore(inference.up.redis, inference.up.sealer, settings.key_prefix)
        self.concurrency = settings.batch_concurrency
        self.lines_per_run = settings.batch_lines_per_run
        self.yield_seconds = settings.batch_yield_seconds
        self.live = LiveTraffic(
            inference.up.redis, settings.key_prefix, lambda: len(inference.answering)
        )

    async def serve(self, grace: float) -> None:
        """Poll the batch task queue until cancelled: every gateway runs batches' workflows
        and lines. A worker that cannot start (Temporal away) is started again."""
        publishing = asyncio.create_task(self.live.publish())
        try:
            await self._serve(grace)
        finally:
            publishing.cancel()

    async def _serve(self, grace: float) -> None:
        while True:
            worker = self._worker(grace)
            try:
                await worker.run()  # cancelled: it shuts down, with the grace for its lines
            except Exception:
                log.exception("the batch worker stopped; starting it again")
            await asyncio.sleep(RESTART_SECONDS)

    def _worker(self, grace: float) -> Worker:
        activities = BatchActivities(
            self.inference, self.files, self.store, self.live, self.yield_seconds
        )
        return Worker(
            self.temporal,
            task_queue=BATCH_TASK_QUEUE,
            workflows=[BatchWorkflow],
            activities=activities.all(),
            # Only sequences activities; the sandbox would cost CPU for nothing.
            workflow_runner=UnsandboxedWorkflowRunner(),
            max_concurrent_activities=max(64, self.concurrency * 4),
            graceful_shutdown_timeout=timedelta(seconds=grace),
        )

    async def create(self, key_id: str, body: Any) -> Batch:
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        endpoint = body.get("endpoint")
        if endpoint not in ENDPOINTS:
            raise InvalidRequest(
                f"'endpoint' must be one of {', '.join(ENDPOINTS)}.", param="endpoint"
            )
        window = body.get("completion_window")
        if window not in WINDOWS:
            raise InvalidRequest("'completion_window' must be '24h'.", param="completion_window")
        metadata = _metadata(body.get("metadata"))
        file_id = body.get("input_file_id")
        if not isinstance(file_id, str):
            raise InvalidRequest("'input_file_id' is required.", param="input_file_id")
        stored = await self.files.get(file_id)
        if stored.owner != key_id:
            raise NotFound(f"No such File object: {file_id}", param="input_file_id")
        if stored.purpose != "batch":
            raise InvalidRequest(
                f"File {file_id} has purpose '{stored.purpose}'; a batch's input needs 'batch'.",
                param="input_file_id",
            )
        now = int(time.time())
        batch = Batch(
            id=f"batch_{uuid.uuid4().hex}",
            owner=key_id,
            endpoint=endpoint,
            input_file_id=file_id,
            completion_window=window,
            status=VALIDATING,
            times={"created_at": now, "expires_at": now + WINDOWS[window]},
            metadata=metadata,
        )
        await self.store.create(batch)
        job = BatchJob(
            batch.id,
            key_id,
            endpoint,
            file_id,
            deadline=float(batch.times["expires_at"]),
            concurrency=self.concurrency,
            lines_per_run=self.lines_per_run,
        )
        try:
            await self.temporal.start_workflow(
                BatchWorkflow.run,
                job,
                id=workflow_id(batch.id),
                task_queue=BATCH_TASK_QUEUE,
                static_summary=f"batch of {endpoint} from {file_id}",
            )
        except RPCError:
            await self.store.forget(batch)
            raise ServiceUnavailable(
                "The orchestrator is unavailable; try again shortly."
            ) from None
        return batch

    async def get(self, batch_id: str, key_id: str, admin: bool) -> Batch:
        batch = await self.store.get(batch_id) if batch_id.startswith("batch_") else None
        if batch is None or not (admin or batch.owner == key_id):
            raise NotFound(f"No such batch: {batch_id}")
        return batch

    async def list(self, key_id: str, admin: bool, after: str | None, limit: int) -> list[Batch]:
        ids = await self.store.ids(None if admin else key_id, after, limit)
        found = [await self.store.get(i) for i in ids]
        return [b for b in found if b is not None]

    async def cancel(self, batch_id: str, key_id: str, admin: bool) -> Batch:
        """Cancelling: no line starts after this; those running finish and are kept."""
        batch = await self.get(batch_id, key_id, admin)
        now = await self.store.transition(batch.id, CANCELLING, VALIDATING, IN_PROGRESS)
        if now != CANCELLING:
            raise InvalidRequest(f"Cannot cancel a batch that is {now}.")
        handle = self.temporal.get_workflow_handle(workflow_id(batch.id))
        try:
            await handle.signal(CANCEL_SIGNAL)
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                # Its status says cancelling; the run sees it when it next checks.
                log.warning("cannot signal the batch", extra={"batch_id": batch.id})
        return await self.get(batch_id, key_id, admin)


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    valid = isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
        for k, v in value.items()
    )
    if not valid or len(value) > MAX_METADATA:
        raise InvalidRequest(
            "'metadata' is at most 16 pairs of strings (keys up to 64 characters, values up "
            "to 512).",
            param="metadata",
        )
    return dict(value)
