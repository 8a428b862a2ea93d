"""Every recorded history (histories/*.json) replays against the current workflow code, run as
the production workers run it (unsandboxed; a pipeline's own exception fails its run). A change
that would make a running workflow take another path than its history says (a step added,
removed or reordered; an input the contract no longer reads) fails here, not in production.

The histories are recorded by record_histories.py (its docstring says when to record again: not
to make this test pass)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.workflow import NondeterminismError

from tests.workflows.catalog import ALL
from tests.workflows.harness import workflow_type
from tests.workflows.scenarios import WORKFLOWS, production_settings, replay_settings, replayer

HISTORIES = sorted((Path(__file__).resolve().parent / "histories").glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


@pytest.mark.parametrize("path", HISTORIES, ids=[path.stem for path in HISTORIES])
async def test_the_current_code_replays_the_recorded_history(path: Path) -> None:
    history = load(path)
    workflow = workflow_type(history)
    assert workflow in WORKFLOWS, f"{path.name}: no workflow `{workflow}` is registered"
    async with asyncio.timeout(30):  # a replayer that waits forever fails, too
        await replayer(workflow).replay_workflow(history)  # raises on non-determinism


def test_every_workflow_and_every_scenario_has_a_recorded_history() -> None:
    unrecorded = set(ALL) - {path.stem for path in HISTORIES}
    assert not unrecorded, "record them: ./dev shell -m tests.workflows.record_histories"
    untested = set(WORKFLOWS) - {workflow_type(load(path)) for path in HISTORIES}
    assert not untested, "give each a scenario in catalog.py, tests, and a recorded history"


def test_signals_and_timers_are_in_the_recorded_paths() -> None:
    approvals = [load(path) for path in HISTORIES if path.stem.startswith("human-approval")]
    kinds = {event.event_type for history in approvals for event in history.events}
    assert {
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
        EventType.EVENT_TYPE_TIMER_STARTED,
        EventType.EVENT_TYPE_TIMER_FIRED,
    } <= kinds


async def test_replay_runs_each_workflow_as_the_production_workers_do(client: Client) -> None:
    assert production_settings(client) == replay_settings()


def test_nondeterminism_does_not_fail_a_running_workflow() -> None:
    """A deploy that changed a workflow in a way its running runs cannot replay leaves them
    retrying their workflow task until a fix or a rollback; a failure type that took in
    NondeterminismError would fail them (and a Replayer so set up never returns)."""
    for types in replay_settings().values():
        assert not any(issubclass(NondeterminismError, kind) for kind in types[1])
