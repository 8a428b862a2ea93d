"""summarize-then-answer: a small model condenses the conversation, a strong one answers the
last message with that summary as its context (a long chat costs the strong model little)."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from temporalio import workflow

from tiller.contract.names import pipeline_workflow
from tiller.contract.requests import Message
from tiller.contract.results import InferenceResult
from tiller.pipelines.base import PipelineOptions
from tiller.pipelines.steps import Steps


class Options(PipelineOptions):  # strict: unknown options are refused at load
    summarize: str = Field(min_length=1)
    answer: str = Field(min_length=1)

    def named_models(self) -> dict[tuple[str | int, ...], str]:
        # Every model the options name, by key path: the router checks each exists.
        return {("summarize",): self.summarize, ("answer",): self.answer}


@workflow.defn(name=pipeline_workflow("summarize-then-answer"))
class Workflow:
    @workflow.run
    async def run(self, payload: dict[str, Any]) -> InferenceResult:
        steps = Steps(payload)
        options = steps.options(Options)
        earlier = "\n".join(f"{m.role}: {m.text}" for m in steps.messages[:-1])
        summary = await steps.collect(
            "summarize", options.summarize, [Message("user", f"Summarize:\n{earlier}")]
        )
        context = Message("system", f"The conversation so far, summarized: {summary}")
        return await steps.answer("answer", options.answer, [context, steps.messages[-1]])
