"""Tiller's workflows run against stand-in activities: inputs, stand-ins, workers, one run.

This is the one module of tests/workflows that imports Tiller's own code (the workflow classes,
the contract's dataclasses, activity and queue names, errors): when services/ moves things,
the imports change here only. The tests and the recorder (record_histories.py) speak in
scenarios (catalog.py) and in what a run observed (`Run`).

The activities are stand-ins registered under the real names (`tiller.generate`,
`tiller.pipeline.route`, `tiller.pipeline.publish`). They take and return the real payloads
(dataclasses.asdict of the contract's dataclasses), answer as a scenario scripts them and record
what they were asked. Nothing leaves the machine: no engine, router or Redis, only the local
Temporal test server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, cast

from temporalio import activity
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker

from tests.workflows.harness import (
    activity_events,
    failure_chain,
    timers,
)
from tiller import pipelines
from tiller.common.errors import (
    EngineError,
    EngineUnavailable,
    InvalidRequest,
    ModelNotFound,
    TillerError,
)
from tiller.contract.names import (
    FAILOVER_TASK_QUEUE,
    FAILOVER_WORKFLOW,
    GENERATE_ACTIVITY,
    PIPELINE_TASK_QUEUE,
    PUBLISH_ACTIVITY,
    ROUTE_ACTIVITY,
    pipeline_workflow,
)
from tiller.contract.requests import Chat, InferenceInput, Message, Retry, Sampling, Target
from tiller.contract.results import InferenceResult, Usage
from tiller.contract.routes import StepRoute
from tiller.contract.runs import request_bound_seconds
from tiller.worker.failover import FailoverWorkflow
from tiller.worker.pipeline_activities import PipelineActivities
from tiller.worker.server import failover_worker, pipeline_worker

__all__ = [  # re-exported for the catalog's scripts and inputs
    "FAILOVER_WORKFLOW",
    "EngineError",
    "EngineUnavailable",
    "InvalidRequest",
    "StepRoute",
    "pipeline_workflow",
]

# How the production workers run these workflows (services/worker/server.py): the replay uses
# these, and test_replay checks they still match the production workers.
RUNNER = UnsandboxedWorkflowRunner()
WORKFLOWS: dict[str, type] = {
    FAILOVER_WORKFLOW: FailoverWorkflow,
    **{pipeline_workflow(name): pipelines.module(name).Workflow for name in pipelines.PIPELINES},
}
# A bug in a pipeline's code fails its run; the failover workflow keeps the SDK's default.
FAILOVER_FAILURES: list[type[BaseException]] = []
PIPELINE_FAILURES: list[type[BaseException]] = list(pipelines.BUG_TYPES)


def failure_types(workflow: str) -> list[type[BaseException]]:
    return FAILOVER_FAILURES if workflow == FAILOVER_WORKFLOW else PIPELINE_FAILURES


# Steps retry quickly: the test server skips the backoff, but each attempt still runs.
FAST_RETRY = Retry(max_attempts=2, initial_interval_seconds=0.1, maximum_interval_seconds=0.2)


# --- inputs -----------------------------------------------------------------------------------


def deployment(name: str, model: str) -> Target:
    """A deployment no one ever connects to: the stand-in engine answers for it."""
    return Target(name, "openai", f"http://{name}.invalid/v1", model, f"test.{name}", model, True)


def chat_request(
    request_id: str,
    model: str,
    question: str,
    targets: Sequence[Target],
    heartbeat_timeout_seconds: float = 10.0,
    queue_timeout_seconds: float = 60.0,
) -> dict[str, Any]:
    """The failover workflow's input, as the gateway sends it: one user message, the plan."""
    return dataclasses.asdict(
        InferenceInput(
            request_id=request_id,
            model=model,
            ask=Chat((Message("user", question),)),
            sampling=Sampling(max_tokens=16),
            stream=True,
            target=targets[0],
            next_targets=tuple(targets[1:]),
            events_key=f"tiller:events:{request_id}",
            timeout_seconds=30.0,
            retry=FAST_RETRY,
            heartbeat_timeout_seconds=heartbeat_timeout_seconds,
            queue_timeout_seconds=queue_timeout_seconds,
        )
    )


def pipeline_request(
    request_id: str, pipeline: str, options: dict[str, Any], messages: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """A pipeline workflow's input, as the gateway sends it: the target only names it."""
    return dataclasses.asdict(
        InferenceInput(
            request_id=request_id,
            model=f"{pipeline}-model",
            ask=Chat(tuple(Message(role, content) for role, content in messages)),
            sampling=Sampling(max_tokens=16),
            stream=True,
            target=Target(f"pipeline:{pipeline}", "pipeline", "", "", PIPELINE_TASK_QUEUE),
            events_key=f"tiller:events:{request_id}",
            timeout_seconds=120.0,  # the pipeline model's: it bounds the whole run
            pipeline=pipeline,
            pipeline_options=options,
        )
    )


def model_route(model: str, *deployments: str, system_prompt: str = "") -> StepRoute:
    """What the router answers for a step's model: its deployments, in order."""
    return StepRoute(
        model=model,
        targets=tuple(deployment(name, model) for name in deployments),
        retry=FAST_RETRY,
        timeout_seconds=30.0,
        heartbeat_timeout_seconds=10.0,
        queue_timeout_seconds=60.0,
        defaults=Sampling(),
        system_prompt=system_prompt,
    )


# --- stand-in activities -----------------------------------------------------------------------


class Hang:
    """An attempt that never answers: it heartbeats until it is cancelled."""


class Silent:
    """An attempt that never answers nor heartbeats: its heartbeat timeout ends it."""


@dataclasses.dataclass(frozen=True)
class OnceHanging:
    """`then`, once `count` other attempts hang (so that they run when this one ends)."""

    count: int
    then: str | TillerError


Reply = str | TillerError | Hang | Silent | OnceHanging
# Per `<step>@<deployment>` (a pipeline's step) or per deployment: one reply per attempt, in
# order; once they are used up the engine echoes (`<deployment>: <last message>`).
Script = Mapping[str, Sequence[Reply]]


@dataclasses.dataclass(frozen=True)
class EngineCall:
    """One attempt of `tiller.generate`: what the stand-in engine was asked, and how."""

    activity_id: str  # a pipeline's step is `<step>@<deployment>`
    task_queue: str
    attempt: int
    deployment: str
    messages: list[tuple[str, str | None]]  # (role, content)
    next_deployments: list[str]  # the plan after this deployment
    target_index: int  # this deployment's place in the plan
    resumable: list[bool]  # per deployment of the plan: may it continue a partial answer
    events_key: str  # the stream it writes
    stream: bool
    spent: dict[str, int]  # what earlier steps used, reported with this answer's usage
    # How Temporal runs the attempt (the workflow's activity options).
    start_to_close: timedelta | None
    heartbeat_timeout: timedelta | None
    schedule_to_close: timedelta | None

    @property
    def step(self) -> str:
        """The pipeline step (`draft`) of the activity id; "" for the failover workflow."""
        return self.activity_id.rpartition("@")[0]

    @classmethod
    def of(cls, info: activity.Info, request: InferenceInput) -> EngineCall:
        assert isinstance(request.ask, Chat), "workflows ask engines chat completions"
        return cls(
            activity_id=info.activity_id,
            task_queue=info.task_queue,
            attempt=info.attempt,
            deployment=request.target.deployment,
            messages=[(m.role, m.text) for m in request.ask.messages],
            next_deployments=[t.deployment for t in request.next_targets],
            target_index=request.target_index,
            resumable=[t.resume for t in request.targets],
            events_key=request.events_key,
            stream=request.stream,
            spent=dataclasses.asdict(request.spent),
            start_to_close=info.start_to_close_timeout,
            heartbeat_timeout=info.heartbeat_timeout,
            schedule_to_close=info.schedule_to_close_timeout,
        )


def usage_of(call: EngineCall, text: str) -> Usage:
    """A word count: deterministic, and different per step, so sums can be checked."""
    words = sum(len((content or "").split()) for _, content in call.messages)
    return Usage(prompt_tokens=words, completion_tokens=len(text.split()))


class StandInEngines:
    """`tiller.generate`: every deployment's engine, scripted."""

    def __init__(self, script: Script) -> None:
        self.replies = {key: list(replies) for key, replies in script.items()}
        self.calls: list[EngineCall] = []
        self.cancelled: list[EngineCall] = []
        self.used: dict[str, Usage] = {}  # per activity id, what its answer reported
        self.running = 0

    @activity.defn(name=GENERATE_ACTIVITY)
    async def generate(self, payload: dict[str, Any]) -> dict[str, Any]:
        request = InferenceInput.from_dict(payload)
        call = EngineCall.of(activity.info(), request)
        self.calls.append(call)
        reply = self._next_reply(call)
        if isinstance(reply, OnceHanging):
            while self.running < reply.count:
                await asyncio.sleep(0.02)
            reply = reply.then
        if isinstance(reply, TillerError):
            raise reply.to_application_error()
        if isinstance(reply, Hang | Silent):
            await self._wait(call, heartbeat=isinstance(reply, Hang))
        target = request.target
        text = reply if isinstance(reply, str) else f"{call.deployment}: {call.messages[-1][1]}"
        answer = InferenceResult(text, "stop", usage_of(call, text), call.deployment, target.model)
        self.used[call.activity_id] = answer.usage
        return dataclasses.asdict(answer)

    def _next_reply(self, call: EngineCall) -> Reply | None:
        for key in (call.activity_id, call.deployment):
            if self.replies.get(key):
                return self.replies[key].pop(0)
        return None

    async def _wait(self, call: EngineCall, heartbeat: bool) -> None:
        # A silent attempt is timed out by the server; the worker's shutdown ends it here.
        self.running += heartbeat
        try:
            while True:
                if heartbeat:
                    activity.heartbeat()
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            self.cancelled.append(call)
            raise
        finally:
            self.running -= heartbeat


class StandInPipelineActivities:
    """A pipeline's own activities: the router's answer per model, and the client's stream."""

    def __init__(self, routes: Mapping[str, StepRoute]) -> None:
        self.routes = dict(routes)
        self.resolved: list[str] = []
        self.published: list[dict[str, Any]] = []

    @activity.defn(name=ROUTE_ACTIVITY)
    async def route(self, model: str) -> dict[str, Any]:
        self.resolved.append(model)
        if model not in self.routes:
            raise ModelNotFound(f"The model `{model}` does not exist.").to_application_error()
        return dataclasses.asdict(self.routes[model])

    @activity.defn(name=PUBLISH_ACTIVITY)
    async def publish(self, payload: dict[str, Any]) -> None:
        self.published.append(payload)


# --- one run ------------------------------------------------------------------------------------

Drive = Callable[[WorkflowHandle[Any, Any]], Awaitable[dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One workflow run: its input, what the stand-ins answer, what the test does meanwhile."""

    name: str  # also the workflow id and the recorded history's file name
    workflow: str  # the workflow type
    request: dict[str, Any]
    script: Script = dataclasses.field(default_factory=dict)
    routes: Mapping[str, StepRoute] = dataclasses.field(default_factory=dict)
    unpolled: frozenset[str] = frozenset()  # deployments whose queue no worker polls
    drive: Drive | None = None  # signals and queries, while the run goes on


@dataclasses.dataclass
class Run:
    """What a run observed: its outcome, and what each stand-in was asked."""

    handle: WorkflowHandle[Any, Any]
    result: dict[str, Any] | None
    failure: WorkflowFailureError | None
    engines: StandInEngines
    own: StandInPipelineActivities
    observed: dict[str, Any]

    @property
    def tried(self) -> list[tuple[str, str, int]]:
        """(step, deployment, attempt) of every engine call, in order."""
        return [(c.step, c.deployment, c.attempt) for c in self.engines.calls]

    def used(self, *activity_ids: str) -> dict[str, int]:
        """The usage these steps' answers reported, added up (as a Usage payload)."""
        return dataclasses.asdict(sum((self.engines.used[i] for i in activity_ids), Usage()))

    def asked(self, step: str) -> EngineCall:
        """The last attempt of a pipeline's step."""
        return [c for c in self.engines.calls if c.step == step][-1]

    @property
    def published(self) -> list[dict[str, Any]]:
        return self.own.published

    async def activity_events(self) -> list[tuple[str, str]]:
        return activity_events(await self.handle.fetch_history())

    async def timers(self) -> list[str]:
        return timers(await self.handle.fetch_history())

    def failure_chain(self) -> list[str]:
        return failure_chain(self.failure)


def _task_queue(workflow: str) -> str:
    return FAILOVER_TASK_QUEUE if workflow == FAILOVER_WORKFLOW else PIPELINE_TASK_QUEUE


def _execution_timeout(scenario: Scenario) -> timedelta:
    request = InferenceInput.from_dict(scenario.request)
    if scenario.workflow == FAILOVER_WORKFLOW:  # as the gateway starts them (executions.py)
        return timedelta(seconds=request_bound_seconds(request) + 60)
    return timedelta(seconds=request.timeout_seconds)


def _queues(scenario: Scenario) -> set[str]:
    request = InferenceInput.from_dict(scenario.request)
    targets = [*request.targets, *(t for r in scenario.routes.values() for t in r.targets)]
    return {t.task_queue for t in targets if t.deployment not in scenario.unpolled} - {
        PIPELINE_TASK_QUEUE
    }


def workflow_workers(client: Client, own: StandInPipelineActivities) -> list[Worker]:
    """The production workers of the workflows (services/worker/server.py), the pipelines' with
    the stand-in activities (registered by the same method names)."""
    return [
        failover_worker(client, 0.0),
        pipeline_worker(client, cast(PipelineActivities, own), 0.0),
    ]


@contextlib.asynccontextmanager
async def workers(
    client: Client, scenario: Scenario, engines: StandInEngines, own: StandInPipelineActivities
) -> AsyncIterator[None]:
    """The workflows' workers as production runs them, and a stand-in engine on every queue."""
    polled = [
        *workflow_workers(client, own),
        *(
            Worker(
                client,
                task_queue=queue,
                activities=[engines.generate],
                # Cancellations reach a hanging stand-in at its next beat.
                max_heartbeat_throttle_interval=timedelta(milliseconds=50),
                default_heartbeat_throttle_interval=timedelta(milliseconds=50),
            )
            for queue in sorted(_queues(scenario))
        ),
    ]
    async with contextlib.AsyncExitStack() as stack:
        for worker in polled:
            await stack.enter_async_context(worker)
        yield


async def play(client: Client, scenario: Scenario, seconds: float = 20.0) -> Run:
    """Run the scenario's workflow to its end, with its stand-ins (and fail past `seconds`: a
    run that waits on something no stand-in will ever do should not hang the suite)."""
    async with asyncio.timeout(seconds):
        return await _play(client, scenario)


async def _play(client: Client, scenario: Scenario) -> Run:
    engines = StandInEngines(scenario.script)
    own = StandInPipelineActivities(scenario.routes)
    async with workers(client, scenario, engines, own):
        handle = await client.start_workflow(
            scenario.workflow,
            scenario.request,
            id=scenario.name,
            task_queue=_task_queue(scenario.workflow),
            execution_timeout=_execution_timeout(scenario),
        )
        observed = await scenario.drive(handle) if scenario.drive else {}
        result: dict[str, Any] | None = None
        failure: WorkflowFailureError | None = None
        try:
            result = await handle.result()
        except WorkflowFailureError as error:
            failure = error
        await _settled(engines)
    return Run(handle, result, failure, engines, own, observed)


async def _settled(engines: StandInEngines, seconds: float = 5.0) -> None:
    """Wait for the heartbeating stand-ins to end (cancelled by the workflow), rather than
    have the workers' shutdown cancel them."""
    async with asyncio.timeout(seconds):
        while engines.running:
            await asyncio.sleep(0.02)


# --- replay ------------------------------------------------------------------------------------


def replayer(workflow: str) -> Replayer:
    """A replayer of the current code of `workflow`, run as the production workers run it."""
    return Replayer(
        workflows=[WORKFLOWS[workflow]],
        workflow_runner=RUNNER,
        workflow_failure_exception_types=failure_types(workflow),
    )


# --- production settings ----------------------------------------------------------------------

Settings = dict[type, tuple[type, list[type[BaseException]]]]


def production_settings(client: Client) -> Settings:
    """Per workflow class: the runner and failure types of the production worker that runs it
    (built, never started)."""
    settings: Settings = {}
    for worker in workflow_workers(client, StandInPipelineActivities({})):
        config = worker.config()
        for workflow in config.get("workflows", ()):
            settings[workflow] = (
                type(config.get("workflow_runner")),
                list(config.get("workflow_failure_exception_types", ())),
            )
    return settings


def replay_settings() -> Settings:
    """What the replay runs each workflow class with."""
    return {cls: (type(RUNNER), failure_types(name)) for name, cls in WORKFLOWS.items()}
