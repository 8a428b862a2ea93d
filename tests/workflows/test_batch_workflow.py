"""The batch workflow's decisions, with stand-in activities on the time-skipping test server:
every line once, at most `concurrency` at once, continued as new past `lines_per_run`, a cancel
that keeps what ran, a deadline that expires the rest, a refused file that runs nothing. The
real activities (Redis, the file store, the live request path) are tested in tests/e2e."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from tiller.gateway.batches.shared import (
    BATCH_TASK_QUEUE,
    CANCEL_SIGNAL,
    CANCELLED,
    CHECKPOINT_ACTIVITY,
    COMPLETED,
    EXPIRED,
    FINALIZE_ACTIVITY,
    LINE_ACTIVITY,
    VALIDATE_ACTIVITY,
    BatchJob,
    Ending,
    LineJob,
)
from tiller.gateway.batches.workflow import BatchWorkflow


@dataclass
class Stand:
    total: int
    line_seconds: float = 0.0
    ran: Counter[int] = field(default_factory=Counter)
    running: int = 0
    most: int = 0
    endings: list[str] = field(default_factory=list)
    checkpoints: int = 0
    status: str = "in_progress"  # what the batch's record says at a checkpoint
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name=VALIDATE_ACTIVITY)
        async def validate(batch_id: str) -> int:
            return self.total

        @activity.defn(name=LINE_ACTIVITY)
        async def line(job: LineJob) -> bool:
            self.running += 1
            self.most = max(self.most, self.running)
            self.started.set()
            try:
                await asyncio.sleep(self.line_seconds)
            finally:
                self.running -= 1
            self.ran[job.index] += 1
            return job.index % 7 != 0

        @activity.defn(name=CHECKPOINT_ACTIVITY)
        async def checkpoint(batch_id: str) -> str:
            self.checkpoints += 1
            return self.status

        @activity.defn(name=FINALIZE_ACTIVITY)
        async def finalize(ending: Ending) -> None:
            self.endings.append(ending.status)

        return [validate, line, checkpoint, finalize]


def job(total_lines: int = 0, deadline: float = 0, **overrides: int) -> BatchJob:
    return BatchJob(
        batch_id=f"batch_{uuid.uuid4().hex}",
        key_id="k",
        endpoint="/v1/chat/completions",
        input_file_id="file-x",
        deadline=deadline or time.time() + 86_400,
        concurrency=overrides.get("concurrency", 4),
        lines_per_run=overrides.get("lines_per_run", 1000),
    )


def worker(client: Client, stand: Stand) -> Worker:
    return Worker(
        client,
        task_queue=BATCH_TASK_QUEUE,
        workflows=[BatchWorkflow],
        activities=stand.activities(),
        workflow_runner=UnsandboxedWorkflowRunner(),
    )


async def test_every_line_once_within_the_cap_across_continued_runs(client: Client) -> None:
    stand = Stand(total=25)
    async with worker(client, stand):
        result = await client.execute_workflow(
            BatchWorkflow.run,
            job(concurrency=3, lines_per_run=10),
            id=f"b-{uuid.uuid4().hex}",
            task_queue=BATCH_TASK_QUEUE,
        )
    assert result == COMPLETED
    assert sorted(stand.ran) == list(range(25)) and set(stand.ran.values()) == {1}
    assert stand.most <= 3
    assert stand.checkpoints == 3  # one per run: lines 0-9, then two continued runs
    assert stand.endings == [COMPLETED]


async def test_a_cancel_keeps_what_ran_and_starts_nothing_more(client: Client) -> None:
    stand = Stand(total=200, line_seconds=0.05)
    async with worker(client, stand):
        handle = await client.start_workflow(
            BatchWorkflow.run,
            job(concurrency=2),
            id=f"b-{uuid.uuid4().hex}",
            task_queue=BATCH_TASK_QUEUE,
        )
        await stand.started.wait()
        await handle.signal(CANCEL_SIGNAL)
        result = await handle.result()
    assert result == CANCELLED
    assert 0 < len(stand.ran) < 200 and set(stand.ran.values()) == {1}
    assert stand.endings == [CANCELLED]


async def test_lines_not_started_by_the_deadline_expire(client: Client) -> None:
    stand = Stand(total=50, line_seconds=0.3)
    async with worker(client, stand):
        result = await client.execute_workflow(
            BatchWorkflow.run,
            job(concurrency=1, deadline=time.time() + 1.0),
            id=f"b-{uuid.uuid4().hex}",
            task_queue=BATCH_TASK_QUEUE,
        )
    assert result == EXPIRED
    assert 1 <= len(stand.ran) <= 4
    assert stand.endings == [EXPIRED]


async def test_a_refused_file_runs_no_line(client: Client) -> None:
    stand = Stand(total=-1)
    async with worker(client, stand):
        result = await client.execute_workflow(
            BatchWorkflow.run, job(), id=f"b-{uuid.uuid4().hex}", task_queue=BATCH_TASK_QUEUE
        )
    assert result == "failed"
    assert not stand.ran and not stand.endings


async def test_a_cancel_whose_signal_was_lost_is_seen_in_the_batch_status(
    client: Client,
) -> None:
    stand = Stand(total=30, status="cancelling")  # cancelled while it was being validated
    async with worker(client, stand):
        result = await client.execute_workflow(
            BatchWorkflow.run, job(), id=f"b-{uuid.uuid4().hex}", task_queue=BATCH_TASK_QUEUE
        )
    assert result == CANCELLED and not stand.ran and stand.endings == [CANCELLED]
