"""How Temporal runs a request: the generate activity's options and time bounds, and the
failover loop that workflow code (the failover workflow, a pipeline's steps) runs it with.

The gateway starts the activity itself when a request has one deployment to try, and the
failover workflow otherwise; both give each deployment the same options, so an attempt behaves
alike whichever started it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

from tiller.common.errors import TillerError
from tiller.contract.names import GENERATE_ACTIVITY
from tiller.contract.requests import InferenceInput
from tiller.contract.results import InferenceResult


@dataclass(frozen=True)
class ActivityOptions:
    """How Temporal runs one request's activity: queueing, attempts, heartbeats, retries."""

    schedule_to_start_timeout: timedelta
    start_to_close_timeout: timedelta
    heartbeat_timeout: timedelta
    schedule_to_close_timeout: timedelta
    retry_policy: RetryPolicy

    def as_kwargs(self) -> dict[str, Any]:
        """As keyword arguments of Client.start_activity / execute_activity."""
        return {
            "schedule_to_start_timeout": self.schedule_to_start_timeout,
            "start_to_close_timeout": self.start_to_close_timeout,
            "heartbeat_timeout": self.heartbeat_timeout,
            "schedule_to_close_timeout": self.schedule_to_close_timeout,
            "retry_policy": self.retry_policy,
        }


def activity_options(request: InferenceInput) -> ActivityOptions:
    """Options of one deployment's activity: its queueing, attempts and their backoff."""
    retry = request.retry
    # On the last deployment of the plan an attempt may first wait for its unreachable engine,
    # up to the queue timeout (worker/activities.py), and then has its whole time to answer.
    waits = 0.0 if request.next_targets else request.queue_timeout_seconds
    return ActivityOptions(
        schedule_to_start_timeout=timedelta(seconds=request.queue_timeout_seconds),
        start_to_close_timeout=timedelta(seconds=request.timeout_seconds + waits),
        heartbeat_timeout=timedelta(seconds=request.heartbeat_timeout_seconds),
        # An upper bound on the deployment's share: queueing plus every attempt and its backoff.
        schedule_to_close_timeout=timedelta(seconds=deployment_bound_seconds(request)),
        retry_policy=RetryPolicy(
            initial_interval=timedelta(seconds=retry.initial_interval_seconds),
            backoff_coefficient=retry.backoff_coefficient,
            maximum_interval=timedelta(seconds=retry.maximum_interval_seconds),
            maximum_attempts=retry.max_attempts,
        ),
    )


def deployment_bound_seconds(request: InferenceInput) -> float:
    retry = request.retry
    per_attempt = request.timeout_seconds + retry.maximum_interval_seconds
    return request.queue_timeout_seconds + retry.max_attempts * per_attempt


def request_bound_seconds(request: InferenceInput) -> float:
    """The longest a request can take before its client gets an answer or an error: every
    deployment it may try, each with its queueing, attempts and backoff."""
    return deployment_bound_seconds(request) * len(request.targets)


async def run_plan(request: InferenceInput, summary: str | None = None) -> InferenceResult:
    """The request on each of its deployments in turn, from workflow code (the failover
    workflow's, or a pipeline's step); the activity's result, or the failure of the last
    deployment tried.

    When every attempt on one deployment failed with an error another engine could fix
    (unreachable, 5xx, overloaded, timed out, nobody polling its queue in time), the next
    deployment is tried; an error no engine can fix (context too long, invalid parameters) or a
    cancellation ends the plan."""
    targets = request.targets
    for index, target in enumerate(targets):
        step = dataclasses.replace(
            request, target=target, next_targets=tuple(targets[index + 1 :]), target_index=index
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
            return InferenceResult.from_dict(result)
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
