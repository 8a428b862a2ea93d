"""Fixtures shared by the suite.

`stack` runs the real thing once per session: `python -m tiller up` with a test models.yaml, on
free ports, with its own data directory. It starts a real Redis and a real Temporal dev server,
which the integration tests use too (each with its own key prefix and task queues). `own_stack`
runs a separate stack for one test that kills or reconfigures its parts (tests/own_stack.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.own_stack import OwnStack
from tests.support import (
    STACK_TASK_QUEUES,
    TEST_MODELS,
    Stack,
    closed_port,
    stack_env,
    start_up,
    stop_up,
    wait_until_up,
)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("stack")
    env, ports = stack_env(data_dir, TILLER_WORKER_TASK_QUEUES=STACK_TASK_QUEUES)
    models = data_dir / "models.yaml"
    models.write_text(TEST_MODELS.format(demo_port=ports["demo"], closed_port=closed_port()))
    process = start_up(env, "--models", str(models))
    output: list[str] = []
    wait_until_up(process, output)
    yield Stack(
        env=env,
        admin_key=env["TILLER_ADMIN_KEY"],
        gateway_port=ports["gateway"],
        grpc_port=ports["grpc"],
        router_port=ports["router"],
        quota_port=ports["quota"],
        redis_port=ports["redis"],
        temporal_port=ports["temporal"],
        demo_port=ports["demo"],
        data_dir=data_dir,
        process=process,
        output=output,
    )
    stop_up(process)


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[OwnStack]:
    """A stack of its own for one test, which may kill or reconfigure its parts."""
    stack = OwnStack(tmp_path)
    try:
        stack.start_all()
        yield stack
    finally:
        stack.stop()
