"""fan-out-merge: several models answer at once; a merge model writes one answer from theirs.

The `models` are asked the caller's conversation in parallel (steps `ask-1`, `ask-2`, …); when
all have answered, the `merge` model is given the question and every answer and writes the one
the client gets, streamed (step `merge`). One failing model fails the request: an answer merged
from fewer models than configured would be a silent change.

    models:
      panel:
        pipeline:
          workflow: fan-out-merge
          options: {models: [model-a, model-b, model-c], merge: model-a}
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

MERGE = (
    "Several assistants answered the same question. Write one answer that keeps what they agree "
    "on and the best of what only one of them says. Reply with the answer only."
)


class Options(PipelineOptions):
    models: list[str] = Field(min_length=2, max_length=8)
    merge: str = Field(min_length=1)
    merge_prompt: str = Field(MERGE, min_length=1)

    def named_models(self) -> dict[tuple[str | int, ...], str]:
        named: dict[tuple[str | int, ...], str] = {("merge",): self.merge}
        named.update({("models", index): model for index, model in enumerate(self.models)})
        return named


@workflow.defn(name=pipeline_workflow("fan-out-merge"))
class Workflow:
    @workflow.run
    async def run(self, payload: dict[str, Any]) -> InferenceResult:
        steps = Steps(payload)
        options = steps.options(Options)
        # Steps at once: Temporal records each and replays them in order.
        answers = await steps.together(
            *(
                steps.collect(f"ask-{index}", model, steps.messages)
                for index, model in enumerate(options.models, 1)
            )
        )
        listed = "\n\n".join(f"Answer {i}:\n{text}" for i, text in enumerate(answers, 1))
        return await steps.answer(
            "merge",
            options.merge,
            [
                Message("system", options.merge_prompt),
                Message("user", f"Question:\n{steps.question}\n\n{listed}"),
            ],
        )
