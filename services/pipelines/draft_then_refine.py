"""draft-then-refine: one model drafts an answer, a second critiques the draft and rewrites it.

Three steps, each visible in the Temporal UI under the request id: `draft` (the draft model
answers the conversation), `critique` (the refine model lists what is wrong with the draft)
and `rewrite` (the refine model writes the improved answer, streamed to the client). The
client sees only the rewrite.

    models:
      careful:
        pipeline:
          workflow: draft-then-refine
          options: {draft: fast-model, refine: strong-model}
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from temporalio import workflow

from tiller.contract.names import pipeline_workflow
from tiller.contract.requests import Message
from tiller.contract.results import InferenceResult
from tiller.pipelines.base import PipelineOptions
from tiller.pipelines.steps import Steps

CRITIQUE = (
    "You review answers. List the mistakes, gaps and unclear parts of the draft answer below. "
    "Do not rewrite it."
)
REWRITE = (
    "You improve answers. Using the critique, write the best answer to the question. Reply "
    "with the answer only."
)


class Options(PipelineOptions):
    draft: str = Field(min_length=1)  # the model that drafts
    refine: str = Field(min_length=1)  # the model that critiques and rewrites
    critique_prompt: str = Field(CRITIQUE, min_length=1)
    rewrite_prompt: str = Field(REWRITE, min_length=1)

    def named_models(self) -> dict[tuple[str | int, ...], str]:
        return {("draft",): self.draft, ("refine",): self.refine}


@workflow.defn(name=pipeline_workflow("draft-then-refine"))
class Workflow:
    @workflow.run
    async def run(self, payload: dict[str, Any]) -> InferenceResult:
        steps = Steps(payload)
        options = steps.options(Options)
        draft = await steps.collect("draft", options.draft, steps.messages)
        question = steps.question
        critique = await steps.collect(
            "critique",
            options.refine,
            [
                Message("system", options.critique_prompt),
                Message("user", f"Question:\n{question}\n\nDraft answer:\n{draft}"),
            ],
        )
        return await steps.answer(
            "rewrite",
            options.refine,
            [
                Message("system", options.rewrite_prompt),
                Message(
                    "user",
                    f"Question:\n{question}\n\nDraft answer:\n{draft}\n\nCritique:\n{critique}",
                ),
            ],
        )
