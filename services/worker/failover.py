"""The failover workflow: one request tried on each of its deployments in turn.

A model with a single deployment and no fallbacks runs as one standalone activity (the fast
path). One with more to try runs as this workflow: the `tiller.generate` activity on the first
deployment's task queue with the model's retry policy, then on the next deployment when every
attempt there failed with an error another engine could fix (contract/runs.py `run_plan`).

Each step's attempts claim the answer's stream (contract/answer_stream.py), so a step that takes
over after a mid-stream failure continues the delivered text or fails cleanly; it never repeats
it. The steps are visible in the Temporal UI under the request id.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from temporalio import workflow

from tiller.contract.names import FAILOVER_WORKFLOW
from tiller.contract.requests import InferenceInput
from tiller.contract.runs import run_plan


@workflow.defn(name=FAILOVER_WORKFLOW)
class FailoverWorkflow:
    @workflow.run
    async def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        return dataclasses.asdict(await run_plan(InferenceInput.from_dict(payload)))
