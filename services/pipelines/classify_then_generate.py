"""classify-then-generate: a classifier picks which model and system prompt answer.

The classifier model (e.g. a Triton topic or language classifier) is asked with the caller's
last user message; its answer is a label. The label is the first word of that answer that
names one of `routes` (case and punctuation aside; a classifier that answers just a label
matches at once); with none, `default`. The route's model then answers the conversation,
streamed to the client, with the route's system prompt in place of the caller's (if it sets
one).

    models:
      helpdesk:
        pipeline:
          workflow: classify-then-generate
          options:
            classifier: topic-classifier
            default: general
            routes:
              code: {model: coder, system: "You are a senior engineer. Answer with code."}
              general: {model: chat}
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, model_validator
from temporalio import workflow

from tiller.contract.names import pipeline_workflow
from tiller.contract.requests import Message
from tiller.contract.results import InferenceResult
from tiller.pipelines.base import PipelineOptions
from tiller.pipelines.steps import Steps

_WORD = re.compile(r"[\w-]+")


class LabelRoute(PipelineOptions):
    model: str = Field(min_length=1)
    system: str | None = Field(None, min_length=1)


class Options(PipelineOptions):
    classifier: str = Field(min_length=1)
    routes: dict[str, LabelRoute] = Field(min_length=1)
    default: str

    @model_validator(mode="after")
    def _default_is_a_route(self) -> Options:
        # A label is matched as one word of the classifier's answer, in any case.
        for label in self.routes:
            if not _WORD.fullmatch(label):
                raise ValueError(
                    f"route {label!r}: a label is one word (letters, digits, _ and -), as the "
                    "classifier answers it"
                )
        lowered = [label.lower() for label in self.routes]
        if len(set(lowered)) < len(lowered):
            raise ValueError("two routes differ only in case; labels match in any case")
        if self.default not in self.routes:
            raise ValueError(
                f"default {self.default!r} is not one of the routes ({', '.join(self.routes)})"
            )
        return self

    def named_models(self) -> dict[tuple[str | int, ...], str]:
        named: dict[tuple[str | int, ...], str] = {("classifier",): self.classifier}
        named.update({("routes", label, "model"): r.model for label, r in self.routes.items()})
        return named


def label_of(answer: str, labels: list[str], default: str) -> str:
    """The first word of the classifier's answer that is a label; `default` if none is."""
    known = {label.lower(): label for label in labels}
    for word in _WORD.findall(answer.lower()):
        if word in known:
            return known[word]
    return default


@workflow.defn(name=pipeline_workflow("classify-then-generate"))
class Workflow:
    @workflow.run
    async def run(self, payload: dict[str, Any]) -> InferenceResult:
        steps = Steps(payload)
        options = steps.options(Options)
        answer = await steps.collect(
            "classify", options.classifier, [Message("user", steps.question)]
        )
        label = label_of(answer, list(options.routes), options.default)
        route = options.routes[label]
        messages = steps.messages
        if route.system:
            kept = [m for m in messages if m.role not in ("system", "developer")]
            messages = (Message("system", route.system), *kept)
        return await steps.answer(f"answer-{label}", route.model, messages)
