"""The inference workflow: one durable request. Temporal owns every retry.

An attempt that fails with a retryable error is retried after a backoff; when attempts run out
(or the error cannot succeed) the failure is published to the request's event stream, so the
waiting client gets one clear error, and the workflow fails with the same error.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from tiller.common.errors import TillerError
    from tiller.worker.shared import (
        GENERATE_ACTIVITY,
        HEARTBEAT_TIMEOUT_SECONDS,
        INFERENCE_WORKFLOW,
        PUBLISH_FAILURE_ACTIVITY,
        QUEUE_TIMEOUT_SECONDS,
        FailureNotice,
        InferenceInput,
        InferenceResult,
    )


# A request is short-lived and someone is waiting: a bug that breaks the workflow task fails the
# request at once (and the client hears of it) instead of retrying the task until it times out.
@workflow.defn(name=INFERENCE_WORKFLOW, failure_exception_types=[Exception])
class InferenceWorkflow:
    @workflow.run
    async def run(self, request: InferenceInput) -> InferenceResult:
        retry = request.retry
        try:
            result: InferenceResult = await workflow.execute_activity(
                GENERATE_ACTIVITY,
                request,
                result_type=InferenceResult,
                task_queue=request.target.task_queue,
                schedule_to_start_timeout=timedelta(seconds=QUEUE_TIMEOUT_SECONDS),
                start_to_close_timeout=timedelta(seconds=request.timeout_seconds),
                heartbeat_timeout=timedelta(seconds=HEARTBEAT_TIMEOUT_SECONDS),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=retry.initial_interval_seconds),
                    backoff_coefficient=retry.backoff_coefficient,
                    maximum_interval=timedelta(seconds=retry.maximum_interval_seconds),
                    maximum_attempts=retry.max_attempts,
                ),
            )
            return result
        except ActivityError as failure:
            if is_cancelled_exception(failure):
                raise  # the caller went away and cancelled us: end as cancelled, publish nothing
            error = TillerError.from_failure(failure)
            await workflow.execute_local_activity(
                PUBLISH_FAILURE_ACTIVITY,
                FailureNotice(request.events_key, error.to_dict()),
                start_to_close_timeout=timedelta(seconds=10),
                # Redis may be away; the gateway's own liveness check covers a lost notice.
                retry_policy=RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=1)),
            )
            raise error.to_application_error(non_retryable=True) from None
