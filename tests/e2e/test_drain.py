"""SIGTERM drains a gateway: it reports not ready at once but keeps serving for its drain
time, then stops accepting, lets an open stream finish whole, and exits cleanly."""

from __future__ import annotations

import signal
import threading

import httpx

from tests.support import Stack, free_port, start_service, text_of, wait_for

WORDS = " ".join(f"w{i}" for i in range(1500))  # about 2 s of streaming at 1 ms a token


def test_sigterm_finishes_open_streams_and_turns_new_work_away(stack: Stack) -> None:
    port, grpc_port = free_port(), free_port()
    gateway = start_service(
        stack,
        "tiller.gateway",
        stack.data_dir / "logs" / "gateway-drain.log",
        TILLER_GATEWAY_PORT=str(port),
        TILLER_GATEWAY_GRPC_PORT=str(grpc_port),
        TILLER_GATEWAY_DRAIN_SECONDS="1",
        TILLER_GATEWAY_SHUTDOWN_GRACE_SECONDS="20",
    )
    base = f"http://127.0.0.1:{port}"
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
