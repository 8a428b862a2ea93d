"""A request's run in Temporal, whichever shape it has.

A model with one deployment and no fallbacks runs as one standalone activity (the fast path);
one with more deployments to try runs as the failover workflow (worker/failover.py), and a
pipeline model as its pipeline's workflow (services/pipelines/). The gateway starts either,
checks whether it still runs, reads its result and cancels it through this one interface. Both
are found again from the request id alone (background requests).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from datetime import timedelta
from typing import Any, ClassVar, Literal

from temporalio.client import (
    ActivityExecutionStatus,
    ActivityFailureError,
    ActivityHandle,
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import Priority
from temporalio.exceptions import TimeoutError as TemporalTimeout
from temporalio.service import RPCError, RPCStatusCode

from tiller.common.errors import AnswerUnreadable, InternalError, TillerError, UpstreamTimeout
from tiller.contract.names import (
    FAILOVER_TASK_QUEUE,
    FAILOVER_WORKFLOW,
    GENERATE_ACTIVITY,
    PIPELINE_TASK_QUEUE,
    pipeline_workflow,
)
from tiller.contract.requests import InferenceInput
from tiller.contract.results import InferenceResult
from tiller.contract.runs import activity_options, request_bound_seconds

Kind = Literal["activity", "workflow"]
RESULT_RPC_TIMEOUT = timedelta(seconds=5)


class Execution(abc.ABC):
    kind: ClassVar[Kind]
    failure: ClassVar[type[ActivityFailureError | WorkflowFailureError]]

    def __init__(self, handle: ActivityHandle[Any] | WorkflowHandle[Any, Any]) -> None:
        self.handle = handle

    @abc.abstractmethod
    async def running(self) -> bool:
        """Whether it may still publish events; raises RPCError if Temporal cannot say."""

    async def result(self) -> InferenceResult:
        """The result of a finished run; raises the TillerError it failed with."""
        try:
            value = await self.handle.result(rpc_timeout=RESULT_RPC_TIMEOUT)
        except self.failure as failure:
            if isinstance(failure, WorkflowFailureError) and isinstance(
                failure.cause, TemporalTimeout
            ):  # the run itself timed out (a pipeline's timeout_seconds), not one engine call
                raise UpstreamTimeout(
                    "The request did not finish within its model's timeout_seconds."
                ) from None
            raise TillerError.from_failure(failure.cause) from None
        except RPCError as error:
            raise unreadable(error) from None
        return value if isinstance(value, InferenceResult) else InferenceResult.from_dict(value)

    async def cancel(self) -> None:
        # Already closed, or Temporal is away: then the run's own timeouts end it.
        with contextlib.suppress(RPCError):
            await self.handle.cancel()


class ActivityExecution(Execution):
    kind: ClassVar[Kind] = "activity"
    failure = ActivityFailureError

    async def running(self) -> bool:
        status = (await self.handle.describe()).status
        return status in (ActivityExecutionStatus.RUNNING, ActivityExecutionStatus.PAUSED)


class WorkflowExecution(Execution):
    kind: ClassVar[Kind] = "workflow"
    failure = WorkflowFailureError

    async def running(self) -> bool:
        status = (await self.handle.describe()).status
        return status == WorkflowExecutionStatus.RUNNING


def unreadable(error: RPCError) -> TillerError:
    """A failed call to Temporal about a request: final if Temporal does not know the run
    (rather than, say, the namespace, which a server still starting may not know yet)."""
    if error.status == RPCStatusCode.NOT_FOUND and not _namespace_unknown(error):
        return InternalError("The orchestrator has no record of this request (expired or lost).")
    return AnswerUnreadable("The request's state could not be read.")


def _namespace_unknown(error: RPCError) -> bool:
    details = error.grpc_status.details
    return any("NamespaceNotFound" in d.type_url for d in details) or (
        "namespace" in error.message.lower()
    )


def kind_of(request: InferenceInput) -> Kind:
    """How `start` runs the request: a workflow when there is more than one place to try."""
    return "workflow" if request.pipeline or request.next_targets else "activity"


async def start(
    client: Client, request: InferenceInput, priority: int, rpc_timeout: float
) -> Execution:
    """Start the request's run; raises RPCError if Temporal refuses or cannot be reached."""
    common: dict[str, Any] = {
        "id": request.request_id,
        "rpc_timeout": timedelta(seconds=rpc_timeout),
        "priority": Priority(priority_key=priority),
    }
    if request.pipeline:
        workflow = await client.start_workflow(
            pipeline_workflow(request.pipeline),
            dataclasses.asdict(request),
            task_queue=PIPELINE_TASK_QUEUE,
            # A pipeline model's `timeout_seconds` bounds the whole pipeline.
            execution_timeout=timedelta(seconds=request.timeout_seconds),
            **common,
        )
        return WorkflowExecution(workflow)
    if not request.next_targets:
        activity = await client.start_activity(
            GENERATE_ACTIVITY,
            request,
            task_queue=request.target.task_queue,
            result_type=InferenceResult,
            **common,
            **activity_options(request).as_kwargs(),
        )
        return ActivityExecution(activity)
    workflow = await client.start_workflow(
        FAILOVER_WORKFLOW,
        dataclasses.asdict(request),
        task_queue=FAILOVER_TASK_QUEUE,
        # Past every step's own bound, so the workflow never closes under a running step.
        execution_timeout=timedelta(seconds=request_bound_seconds(request) + 60),
        **common,
    )
    return WorkflowExecution(workflow)


def attach(client: Client, request_id: str, kind: Kind) -> Execution:
    """The run of an earlier request, from its id (e.g. after a gateway restart)."""
    if kind == "workflow":
        return WorkflowExecution(client.get_workflow_handle(request_id))
    return ActivityExecution(client.get_activity_handle(request_id, result_type=InferenceResult))
