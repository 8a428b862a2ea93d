"""A pipeline's steps, from its workflow code: engine models called by name.

Each step resolves its model through the router (the `tiller.pipeline.route` activity, once per
model per run) and runs the `tiller.generate` activity on that model's deployments, one after
another as the failover workflow does, with the model's own retry policy and timeouts: the
same adapters, heartbeats and retries as any request, and each attempt visible in the
workflow's history. Intermediate steps (`collect`) write to a stream of their own, which no
client reads, and hand their text back to the workflow; only the final step (`answer`, or
`publish` for a text the workflow wrote itself) writes the client's stream, through the same
claims and fences as a single-model request.

A step that fails for good (or a model that cannot be resolved) fails the pipeline: the client
is told at once, with the step's error.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from tiller.common.errors import Cancelled, TillerError
from tiller.contract.events import Done, Failed, Publication
from tiller.contract.names import PIPELINE_TASK_QUEUE, PUBLISH_ACTIVITY, ROUTE_ACTIVITY
from tiller.contract.requests import Chat, InferenceInput, Message, Sampling
from tiller.contract.results import InferenceResult, Usage
from tiller.contract.routes import StepRoute, filled, with_system_prompt
from tiller.contract.runs import run_plan
from tiller.pipelines.base import PipelineOptions

OptionsT = TypeVar("OptionsT", bound=PipelineOptions)
T = TypeVar("T")

# The pipeline's own small activities: a router call, a Redis append.
OWN_ACTIVITY: dict[str, Any] = {
    "task_queue": PIPELINE_TASK_QUEUE,
    "start_to_close_timeout": timedelta(seconds=10),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=0.2),
        maximum_interval=timedelta(seconds=2),
        maximum_attempts=5,
    ),
}


class Steps:
    def __init__(self, payload: dict[str, Any]) -> None:
        """The steps of one run, from the workflow's input (the gateway's InferenceInput)."""
        self.request = InferenceInput.from_dict(payload)
        if not isinstance(self.request.ask, Chat):  # the gateway starts pipelines for chats only
            raise TypeError(f"a pipeline answers chats, not {self.request.ask.kind}")
        self.chat: Chat = self.request.ask
        self.spent = Usage()  # what the steps so far used: charged with the final answer
        self._routes: dict[str, asyncio.Future[StepRoute]] = {}
        self._told_failure = False

    def options(self, model: type[OptionsT]) -> OptionsT:
        """The pipeline's `options:` from models.yaml (validated there at load)."""
        return model.model_validate(self.request.pipeline_options)

    @property
    def messages(self) -> tuple[Message, ...]:
        """The caller's messages (masked where a PII policy says so)."""
        return self.chat.messages

    @property
    def question(self) -> str:
        """The caller's last user message: what most pipelines work on."""
        users = [m.text for m in self.chat.messages if m.role == "user"]
        return users[-1] if users else ""

    async def route(self, model: str) -> StepRoute:
        # One lookup per model, shared by steps that ask at once (fan-out): Temporal refuses
        # two running activities with one id, and would stall the run until its timeout.
        if model not in self._routes:
            self._routes[model] = asyncio.ensure_future(self._resolve(model))
        return await self._routes[model]

    async def _resolve(self, model: str) -> StepRoute:
        found = await workflow.execute_activity(
            ROUTE_ACTIVITY,
            model,
            activity_id=f"route@{model}",
            summary=f"route {model}",
            **OWN_ACTIVITY,
        )
        return StepRoute.from_dict(found)

    async def together(self, *steps: Awaitable[T]) -> list[T]:
        """Steps run at once (fan-out), their results in order. The first to fail fails the
        pipeline, and the others are cancelled (their engines stop) rather than left running."""
        running = [asyncio.ensure_future(step) for step in steps]
        try:
            return list(await asyncio.gather(*running))
        except BaseException:
            for task in running:
                task.cancel()
            raise

    async def collect(self, name: str, model: str, messages: Sequence[Message]) -> str:
        """An intermediate step: `model`'s whole answer to `messages`, for the workflow only."""
        try:
            step = self._input(name, await self.route(model), messages, final=False)
            result = await run_plan(step, summary=name)
        except ActivityError as failure:
            await self.fail(TillerError.from_failure(failure))
            raise
        self.spent += result.usage
        return result.text

    async def answer(self, name: str, model: str, messages: Sequence[Message]) -> InferenceResult:
        """The final step: `model` answers `messages`, streamed to the client."""
        try:
            route = await self.route(model)
        except ActivityError as failure:
            await self.fail(TillerError.from_failure(failure))
            raise
        # Its own failure reaches the client from the activity (its last attempt says so).
        return await run_plan(self._input(name, route, messages, final=True), summary=name)

    async def publish(self, text: str) -> InferenceResult:
        """The final answer is a text the workflow wrote itself: sent to the client whole."""
        result = InferenceResult(text, "stop", self.spent, "", self.request.model)
        await workflow.execute_activity(
            PUBLISH_ACTIVITY,
            Publication(self.request.events_key, Done(result)).to_dict(),
            activity_id="publish",
            summary="publish the answer",
            **OWN_ACTIVITY,
        )
        return result

    async def fail(self, error: TillerError) -> None:
        """Tell the client the pipeline failed (a cancelled one has no client left to tell)."""
        if isinstance(error, Cancelled) or self._told_failure:
            return  # told once: steps failing together would schedule one activity id twice
        self._told_failure = True
        await workflow.execute_activity(
            PUBLISH_ACTIVITY,
            Publication(self.request.events_key, Failed(error, self.spent)).to_dict(),
            activity_id="publish-error",
            summary=f"publish the error: {error.reason}",
            **OWN_ACTIVITY,
        )

    async def refuse(self, error: TillerError) -> ApplicationError:
        """Fail the pipeline with `error` (raise what this returns): the client hears it first."""
        await self.fail(error)
        return error.to_application_error(non_retryable=True)

    def _input(
        self, name: str, route: StepRoute, messages: Sequence[Message], final: bool
    ) -> InferenceInput:
        request = self.request
        targets = list(route.targets)
        if not final:  # nothing streams, so there is no partial answer to continue
            targets = [dataclasses.replace(t, resume=False) for t in targets]
        return dataclasses.replace(
            request,
            model=route.model,
            ask=Chat(with_system_prompt(tuple(messages), route.system_prompt)),
            # The caller's sampling shapes the answer it gets; earlier steps use their model's.
            sampling=filled(request.sampling if final else Sampling(), route.defaults),
            stream=request.stream and final,
            target=targets[0],
            next_targets=tuple(targets[1:]),
            target_index=0,
            events_key=request.events_key if final else f"{request.events_key}:{name}",
            timeout_seconds=route.timeout_seconds,
            retry=route.retry,
            heartbeat_timeout_seconds=route.heartbeat_timeout_seconds,
            queue_timeout_seconds=route.queue_timeout_seconds,
            pipeline="",
            pipeline_options={},
            spent=self.spent if final else Usage(),
        )
