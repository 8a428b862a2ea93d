"""SIGTERM drains a gateway: it reports not ready at once but keeps serving for its drain
time, then stops accepting, lets an open stream finish whole, and exits cleanly."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import httpx

from tests.support import (
    Stack,
    chunks_of,
    free_port,
    resume_handed_over,
    start_service,
    text_of,
    wait_for,
)

WORDS = " ".join(f"w{i}" for i in range(1500))  # about 2 s of streaming at 1 ms a token


def start_gateway(stack: Stack, name: str, **settings: str) -> tuple[subprocess.Popen[bytes], str]:
    """A gateway of the test's own beside the stack's: its process and base URL."""
    port, grpc_port = free_port(), free_port()
    gateway = start_service(
        stack,
        "tiller.gateway",
        stack.data_dir / "logs" / f"gateway-{name}.log",
        TILLER_GATEWAY_PORT=str(port),
        TILLER_GATEWAY_GRPC_PORT=str(grpc_port),
        **settings,
    )
    return gateway, f"http://127.0.0.1:{port}"


def test_sigterm_finishes_open_streams_and_turns_new_work_away(stack: Stack) -> None:
    gateway, base = start_gateway(
        stack,
        "drain",
        TILLER_GATEWAY_DRAIN_SECONDS="1",
        TILLER_GATEWAY_SHUTDOWN_GRACE_SECONDS="20",
    )
    try:
        assert wait_for(lambda: _status(f"{base}/readyz") == 200, timeout=60)
        headers = {"authorization": f"Bearer {stack.admin_key}"}
        body = {"model": "demo", "messages": [{"role": "user", "content": WORDS}], "stream": True}
        lines: list[str] = []
        started = threading.Event()

        def stream() -> None:
            with httpx.stream(
                "POST", f"{base}/v1/chat/completions", json=body, headers=headers, timeout=60
            ) as response:
                for line in response.iter_lines():
                    lines.append(line)
                    started.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert started.wait(30)
        gateway.send_signal(signal.SIGTERM)
        assert wait_for(lambda: _status(f"{base}/readyz") == 503, timeout=5)  # not ready...
        short = {"model": "demo", "messages": [{"role": "user", "content": "during drain"}]}
        during = httpx.post(f"{base}/v1/chat/completions", json=short, headers=headers)
        assert during.status_code == 200  # ...but still serving within its drain time
        reader.join(60)
        assert lines[-2:] == ["data: [DONE]", ""] or lines[-1] == "data: [DONE]"
        assert text_of(lines) == f"You said: {WORDS}"  # the open stream finished whole
        assert gateway.wait(30) == 0
        try:
            httpx.post(f"{base}/v1/chat/completions", json=short, headers=headers, timeout=2)
            refused = False
        except httpx.ConnectError:
            refused = True
        assert refused  # gone: new work goes to the other gateways
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


LONG = " ".join(f"w{i}" for i in range(3500))  # about 4 s of streaming: longer than the grace


def stop_under_readers(
    gateway: subprocess.Popen[bytes], started: threading.Event, *readers: Callable[[], None]
) -> None:
    """Run the readers, SIGTERM the gateway once the first line arrived, and wait for all."""
    threads = [threading.Thread(target=reader) for reader in readers]
    try:
        for thread in threads:
            thread.start()
        assert started.wait(30)
        gateway.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(60)
        assert gateway.wait(30) == 0
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()


def told_to_resume(lines: list[str]) -> dict[str, Any]:
    """The stream's last chunk: the error that says the request goes on elsewhere."""
    told = chunks_of([line for line in lines if line.startswith("data: {")][-1])
    assert told is not None and told["error"]["code"] == "handed_over", lines[-3:]
    error: dict[str, Any] = told["error"]
    return error


def finished(stack: Stack, request_id: str, headers: dict[str, str]) -> dict[str, Any]:
    """The request's record once another gateway adopted, settled and recorded it."""

    def record() -> dict[str, Any]:
        got = httpx.get(f"{stack.base_url}/chat/completions/{request_id}", headers=headers)
        found: dict[str, Any] = got.json()
        return found

    assert wait_for(lambda: record()["status"] != "in_progress", timeout=60)
    return record()


def test_requests_open_past_the_grace_are_handed_over_and_resume_elsewhere(stack: Stack) -> None:
    gateway, base = start_gateway(stack, "hand-over", TILLER_GATEWAY_SHUTDOWN_GRACE_SECONDS="1")
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    body = {"model": "demo", "messages": [{"role": "user", "content": LONG}]}
    assert wait_for(lambda: _status(f"{base}/readyz") == 200, timeout=60)
    lines: list[str] = []
    waited: list[httpx.Response] = []
    started = threading.Event()

    def stream() -> None:
        url = f"{base}/v1/chat/completions"
        body_ = body | {"stream": True}
        with httpx.stream("POST", url, json=body_, headers=headers, timeout=60) as response:
            for line in response.iter_lines():
                lines.append(line)
                started.set()

    def wait() -> None:
        waited.append(
            httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=60)
        )

    stop_under_readers(gateway, started, stream, wait)
    # The stream ended with word of where its answer goes on, after the text it had so far.
    told = told_to_resume(lines)
    # Another gateway (the stack's) goes on from the last event this client saw.
    rest = resume_handed_over(stack.base_url, told["message"], lines, headers)
    assert text_of(lines) + text_of(rest) == f"You said: {LONG}"
    # The caller that waited for a whole answer was told the same, and its result is kept.
    (response,) = waited
    assert response.status_code == 503 and response.json()["error"]["code"] == "handed_over"
    done = finished(stack, response.headers["x-request-id"], headers)
    assert done["status"] == "completed", done
    assert done["choices"][0]["message"]["content"] == f"You said: {LONG}"


def test_a_background_request_read_on_a_stopping_gateway_is_told_and_finishes_elsewhere(
    stack: Stack,
) -> None:
    gateway, base = start_gateway(stack, "hand-over-bg", TILLER_GATEWAY_SHUTDOWN_GRACE_SECONDS="1")
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    body = {"model": "demo", "messages": [{"role": "user", "content": LONG}], "background": True}
    assert wait_for(lambda: _status(f"{base}/readyz") == 200, timeout=60)
    submitted = httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers)
    assert submitted.status_code == 202, submitted.text
    request_id = submitted.json()["id"]
    lines: list[str] = []
    started = threading.Event()

    def stream() -> None:  # a client reading it by id, on the gateway that watches it
        url = f"{base}/v1/chat/completions/{request_id}/stream"
        with httpx.stream("GET", url, headers=headers, timeout=60) as response:
            for line in response.iter_lines():
                lines.append(line)
                started.set()

    stop_under_readers(gateway, started, stream)
    told_to_resume(lines)
    # Its watcher left with its gateway; the stack's gateway adopts it and records the end.
    done = finished(stack, request_id, headers)
    assert done["status"] == "completed", done
    assert done["choices"][0]["message"]["content"] == f"You said: {LONG}"
