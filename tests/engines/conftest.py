"""The engine tests. The TGI stand-in's run with the suite; the real-engine tier (real vLLM on
CPU, real Triton from pytriton) needs cached environments of their own and runs with
`./dev test-engines`, which builds them and sets TILLER_ENGINE_TIER."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.engines import group_guard
from tests.support import free_port

HERE = Path(__file__).resolve().parent
START_TIMEOUT = 120.0

TIER = ["test_triton_adapter.py", "test_real_engines.py", "test_triton_pipeline.py"]
collect_ignore = [] if os.environ.get("TILLER_ENGINE_TIER") else TIER


@dataclass(frozen=True)
class TritonServer:
    grpc: str  # host:port
    http: str  # base URL
    log: Path


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A real Triton Inference Server (pytriton's, on CPU) serving tests/engines/triton_server.py's
    models, for the whole session."""
    python = os.environ.get("TILLER_TRITON_PYTHON")
    if not python:
        pytest.fail("TILLER_TRITON_PYTHON is not set: run the tier with ./dev test-engines")
    grpc_port, http_port = free_port(), free_port()
    here = tmp_path_factory.mktemp("triton")
    log = here / "server.log"
    with log.open("wb") as out:
        # Its own process group (tritonserver and the model stubs), which ends with this run
        # however it ends (group_guard.py).
        guard, process = group_guard.launch(
            [
                python,
                str(HERE / "triton_server.py"),
                f"--grpc-port={grpc_port}",
                f"--http-port={http_port}",
                f"--workspace={here / 'workspace'}",  # not ~/.cache/pytriton, if it is killed
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while b"TRITON READY" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Triton server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield TritonServer(f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}", log)
    finally:
        _stop(guard, process)


def _stop(guard: subprocess.Popen[bytes], process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # pytriton stops tritonserver and its stubs
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(30)
    group_guard.kill(guard, process)  # whatever of its group is left
