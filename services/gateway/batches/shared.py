"""What the batch workflow and its activities agree on: names, inputs and results. They run in
the gateway (it polls BATCH_TASK_QUEUE), so nothing here crosses a service boundary."""

from __future__ import annotations

from dataclasses import dataclass

BATCH_WORKFLOW = "tiller.batch"
BATCH_TASK_QUEUE = "tiller.batches"
VALIDATE_ACTIVITY = "tiller.batch.validate"
LINE_ACTIVITY = "tiller.batch.line"
CHECKPOINT_ACTIVITY = "tiller.batch.checkpoint"
FINALIZE_ACTIVITY = "tiller.batch.finalize"
CANCEL_SIGNAL = "cancel"

# The endpoints a batch may run, as OpenAI names them.
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
# Batch statuses, as OpenAI names them.
VALIDATING, FAILED, IN_PROGRESS, FINALIZING = "validating", "failed", "in_progress", "finalizing"
COMPLETED, EXPIRED, CANCELLING, CANCELLED = "completed", "expired", "cancelling", "cancelled"
TERMINAL = frozenset({FAILED, COMPLETED, EXPIRED, CANCELLED})


def workflow_id(batch_id: str) -> str:
    return f"batch-{batch_id}"


@dataclass(frozen=True)
class BatchJob:
    """The workflow's input; a continued run carries on from `next_index`."""

    batch_id: str
    key_id: str  # whose batch: every line is admitted against this key's limits
    endpoint: str
    input_file_id: str
    deadline: float  # unix seconds: lines not started by then are not run (expired)
    concurrency: int  # lines of this batch running at once
    lines_per_run: int  # lines per workflow run before it continues as new
    total: int = -1  # lines in the input file; -1 until validated
    next_index: int = 0


@dataclass(frozen=True)
class LineJob:
    """One line of a batch to run (or, if it ran before, to report again)."""

    batch_id: str
    key_id: str
    endpoint: str
    input_file_id: str
    index: int  # among the file's non-blank lines, from 0


@dataclass(frozen=True)
class Ending:
    """How the batch's lines ended: `completed`, `cancelled` or `expired`."""

    batch_id: str
    status: str
