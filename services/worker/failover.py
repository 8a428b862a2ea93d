"""The failover workflow: one request tried on each of its deployments in turn.

A model with a single deployment and no fallbacks runs as one standalone activity (the fast
path). One with more to try runs as this workflow: the `tiller.generate` activity on the first
deployment's task queue with the model's retry policy; when every attempt there failed with an
error another engine could fix (unreachable, 5xx, overloaded, timed out, nobody polling the queue
in time), the same activity on the next deployment, then on the fallback models' deployments.
An error no engine can fix (context too long, invalid parameters) or a cancellation ends it.

Each step's attempts claim the answer's stream (events.py), so a step that takes over after a
mid-stream failure continues the delivered text or fails cleanly; it never repeats it. The steps
are visible in the Temporal UI under the request id.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

from tiller.common.errors import TillerError
from tiller.worker.shared import (
    FAILOVER_WORKFLOW,
    GENERATE_ACTIVITY,
    InferenceInput,
    activity_options,
)


@workflow.defn(name=FAILOVER_WORKFLOW)
class FailoverWorkflow:
    @workflow.run
    async def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        return await run_plan(InferenceInput.from_dict(payload))


async def run_plan(request: InferenceInput, summary: str | None = None) -> dict[str, Any]:
    """The request on each of its deployments in turn, from workflow code (this workflow's, or
    a pipeline's step); the activity's result, or the failure of the last deployment tried."""
    targets = request.targets
    for index, target in enumerate(targets):
        step = dataclasses.replace(
            request, target=target, next_targets=targets[index + 1 :], target_index=index
        )
        try:
            result: dict[str, Any] = await workflow.execute_activity(
                GENERATE_ACTIVITY,
                dataclasses.asdict(step),
                task_queue=target.task_queue,
                # A pipeline's step: named in the history (`temporal workflow show`, the UI).
                activity_id=summary and f"{summary}@{target.deployment}",
                summary=summary and f"{summary}: {target.deployment}",
                **activity_options(step).as_kwargs(),
            )
            return result
        except ActivityError as failure:
            if step.next_targets and another_deployment_may_help(failure):
                workflow.logger.info(
                    "deployment failed; trying the next", extra={"deployment": target.deployment}
                )
                continue
            raise
    raise ApplicationError("no deployment to try", non_retryable=True)  # pragma: no cover


def another_deployment_may_help(failure: ActivityError) -> bool:
    cause = failure.cause
    if isinstance(cause, ApplicationError):
        return TillerError.may_fail_over(cause)
    return isinstance(cause, TimeoutError)  # queued too long, heartbeat lost, attempt too long
