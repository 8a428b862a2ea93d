"""human-approval: a model drafts the answer, a person approves it before the client gets it.

The draft model answers (step `draft`); the workflow then waits for an `approve` signal, up to
`approval_timeout_seconds`. Meanwhile the client's request stays open with no response yet (the
gateway answers with the first event) and the reviewer reads the draft with the `draft` query.
The signal's argument is a JSON object: `{"approved": true}` sends the draft as it is,
`{"approved": true, "text": "..."}` sends the reviewer's edit instead, `{"approved": false,
"reason": "..."}` refuses (the client gets a 403 `not_approved` with the reason). No decision
in time: a 504 `approval_timed_out`.

    temporal workflow query --workflow-id chatcmpl-… --name draft --codec-endpoint … --codec-auth …
    temporal workflow signal --workflow-id chatcmpl-… --name approve --input '{"approved": true}' \\
        --codec-endpoint http://127.0.0.1:8080/admin/codec --codec-auth "Bearer $TILLER_ADMIN_KEY"

The pipeline model's `timeout_seconds` bounds the whole run: give it more than the approval
timeout.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import Field
from temporalio import workflow

from tiller.common.errors import ApprovalTimedOut, NotApproved
from tiller.contract.names import pipeline_workflow
from tiller.contract.results import InferenceResult
from tiller.pipelines.base import PipelineOptions
from tiller.pipelines.steps import Steps


class Options(PipelineOptions):
    draft: str = Field(min_length=1)  # the model that drafts the answer
    # Within the pipeline model's timeout_seconds (at most an hour), which must be longer.
    approval_timeout_seconds: float = Field(60.0, gt=0, lt=3600)

    def named_models(self) -> dict[tuple[str | int, ...], str]:
        return {("draft",): self.draft}

    def waits(self) -> tuple[str, float] | None:
        return "approval_timeout_seconds", self.approval_timeout_seconds


@workflow.defn(name=pipeline_workflow("human-approval"))
class Workflow:
    def __init__(self) -> None:
        self.draft: str | None = None
        self.decision: dict[str, Any] | None = None

    @workflow.signal(name="approve")
    def approve(self, decision: dict[str, Any]) -> None:
        self.decision = decision

    @workflow.query(name="draft")
    def current_draft(self) -> str | None:
        return self.draft

    @workflow.run
    async def run(self, payload: dict[str, Any]) -> InferenceResult:
        steps = Steps(payload)
        options = steps.options(Options)
        self.draft = await steps.collect("draft", options.draft, steps.messages)
        wait = timedelta(seconds=options.approval_timeout_seconds)
        try:
            await workflow.wait_condition(lambda: self.decision is not None, timeout=wait)
        except TimeoutError:
            raise await steps.refuse(
                ApprovalTimedOut(
                    f"No reviewer approved the answer within {options.approval_timeout_seconds:g} "
                    "seconds."
                )
            ) from None
        decision = self.decision or {}
        if decision.get("approved") is not True:
            reason = str(decision.get("reason") or "no reason given")
            raise await steps.refuse(NotApproved(f"The reviewer rejected the answer: {reason}."))
        return await steps.publish(str(decision.get("text") or self.draft))
