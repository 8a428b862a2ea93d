"""Pipelines: models whose backend is a Temporal workflow written in Python, not one engine.

A pipeline is a models.yaml entry with `pipeline: {workflow: <name>, options: {...}}`. Callers
use it like any model; its workflow (one module here, registered below) calls engine models by
name through `Steps` (steps.py): each step is the `tiller.generate` activity on that model's
deployments, retried by Temporal, and only the final step streams to the client. Every worker
polls the `tiller.pipelines` task queue for these workflows. A new pipeline is one module with
an `Options` model and a `Workflow` class, a line in PIPELINES, and a models.yaml entry
(docs/pipelines.md).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from tiller.pipelines.base import PipelineOptions

# Exceptions that mean a bug in a pipeline's code: its run fails at once (the client gets a
# 500) instead of Temporal retrying the workflow task until the pipeline's timeout. Not every
# Exception: Temporal's NondeterminismError must not fail a run, so that a deploy that changed a
# pipeline in a way its running workflows cannot replay (a step added, say) leaves them waiting
# for a fix or a rollback (their workflow task retries), not killed.
BUG_TYPES: tuple[type[Exception], ...] = (
    ArithmeticError,
    AssertionError,
    AttributeError,
    LookupError,  # KeyError, IndexError
    NameError,
    RuntimeError,
    TypeError,
    ValueError,  # pydantic's ValidationError too
)

# The `pipeline.workflow` value in models.yaml -> the module that defines it.
PIPELINES: dict[str, str] = {
    "classify-then-generate": "tiller.pipelines.classify_then_generate",
    "draft-then-refine": "tiller.pipelines.draft_then_refine",
    "fan-out-merge": "tiller.pipelines.fan_out_merge",
    "human-approval": "tiller.pipelines.human_approval",
    "summarize-then-answer": "tiller.pipelines.summarize_then_answer",
}


def module(name: str) -> ModuleType:
    return importlib.import_module(PIPELINES[name])


def options_model(name: str) -> type[PipelineOptions]:
    """The strict model of the pipeline's `options:` (the router validates with it)."""
    options: type[PipelineOptions] = module(name).Options
    return options


def workflows() -> list[type]:
    """Every pipeline's workflow class, for the workers to register."""
    return [module(name).Workflow for name in PIPELINES]
