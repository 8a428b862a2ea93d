"""A batch as a Temporal workflow: validate its input file, run its lines (at most `concurrency`
at once, each a live request at the lowest priority class), then write its output and error
files.

Progress lives in Temporal and in Redis, not in a process: a gateway or worker that dies only
delays a line (its activity runs again elsewhere; a line answered before is not run twice), and
a large file goes on as new runs of `lines_per_run` lines each, so no history grows past
Temporal's limits. A cancel (signal) stops starting lines; those running finish and are kept.
Lines not started by the batch's deadline are not run (expired).
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

from tiller.gateway.batches.shared import (
    CANCEL_SIGNAL,
    CANCELLED,
    CANCELLING,
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

T = TypeVar("T")
# Short steps: reading the file, counting, writing the files. Tried until they work (Redis or
# the file store away for a while), within the batch's window.
_STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
# A line is a live request's path: its own retries and failover happen inside it, and a failed
# answer is recorded as the line's error. The activity itself fails only when its gateway dies
# (heartbeats stop) or the stack is briefly unreachable: tried again, on any gateway.
_LINE_HEARTBEAT = timedelta(seconds=15)


@workflow.defn(name="tiller.batch")
class BatchWorkflow:
    def __init__(self) -> None:
        self.cancelling = False
        self.next_index = 0  # the first line not started yet

    @workflow.signal(name=CANCEL_SIGNAL)
    def cancel(self) -> None:
        self.cancelling = True

    @workflow.run
    async def run(self, job: BatchJob) -> str:
        if job.total < 0:
            total = await self._step(VALIDATE_ACTIVITY, job.batch_id, job, int, minutes=30)
            if total < 0:  # refused: the validation wrote its errors and error file
                return "failed"
            job = dataclasses.replace(job, total=total)
        # Cancelled while it was validated or the previous run handed over (a signal that did
        # not arrive: the batch's status says so all the same).
        if await self._step(CHECKPOINT_ACTIVITY, job.batch_id, job, str) == CANCELLING:
            self.cancelling = True
        ending = await self._lines(job)
        if ending is None:  # more lines than one run takes: the next run goes on
            workflow.continue_as_new(dataclasses.replace(job, next_index=self.next_index))
        await self._step(FINALIZE_ACTIVITY, Ending(job.batch_id, ending), job, type(None), 30)
        return ending

    async def _lines(self, job: BatchJob) -> str | None:
        """Run lines from `next_index`; how the batch ended, or None to continue as new."""
        running: set[asyncio.Task[bool]] = set()
        self.next_index = index = job.next_index
        stop = min(job.total, job.next_index + job.lines_per_run)
        ending: str | None = None
        while index < stop:
            await workflow.wait_condition(lambda: len(running) < job.concurrency or self.cancelling)
            if self.cancelling:
                ending = CANCELLED
                break
            if workflow.now().timestamp() >= job.deadline:
                ending = EXPIRED
                break
            task = asyncio.ensure_future(self._line(job, index))
            running.add(task)
            task.add_done_callback(running.discard)
            index += 1
            self.next_index = index
            workflow.set_current_details(f"{index} of {job.total} lines started")
        if running:
            await asyncio.gather(*running)
        workflow.set_current_details(f"{self.next_index} of {job.total} lines answered")
        if ending is None and self.next_index >= job.total:
            ending = CANCELLED if self.cancelling else COMPLETED
        return ending

    async def _line(self, job: BatchJob, index: int) -> bool:
        line = LineJob(job.batch_id, job.key_id, job.endpoint, job.input_file_id, index)
        result: bool = await workflow.execute_activity(
            LINE_ACTIVITY,
            line,
            task_queue=workflow.info().task_queue,
            activity_id=f"line-{index}",
            start_to_close_timeout=timedelta(hours=2),
            schedule_to_close_timeout=self._left(job),
            heartbeat_timeout=_LINE_HEARTBEAT,
            retry_policy=_STEP_RETRY,
        )
        return result

    async def _step(
        self, name: str, arg: object, job: BatchJob, result_type: type[T], minutes: float = 5
    ) -> T:
        result: T = await workflow.execute_activity(
            name,
            arg,
            result_type=result_type,
            task_queue=workflow.info().task_queue,
            start_to_close_timeout=timedelta(minutes=minutes),
            schedule_to_close_timeout=max(self._left(job), timedelta(hours=1)),
            retry_policy=_STEP_RETRY,
        )
        return result

    @staticmethod
    def _left(job: BatchJob) -> timedelta:
        """Until the batch's deadline (at least a minute: a line started in time may finish)."""
        left = job.deadline - workflow.now().timestamp()
        return timedelta(seconds=max(left, 60.0))
