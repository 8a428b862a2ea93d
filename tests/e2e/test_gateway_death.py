"""A gateway SIGKILLed under ordinary (not background) requests: its streams resume on another
gateway whole and once, another gateway takes up and settles what it left, and what nobody
resumes is cancelled and charged what its engine wrote."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable

import httpx
import orjson
import pytest

from tests.e2e.test_background import Gateway, new_key, poll_until_done
from tests.support import Stack, chunks_of, free_port, start_service, stop_service, wait_for

LONG = " ".join(f"w{i}" for i in range(3500))  # about 4 s at the stack's 1 ms a token


def body(content: str, **extra: object) -> dict[str, object]:
    return {"model": "demo", "messages": [{"role": "user", "content": content}], **extra}


@pytest.fixture
async def gateways(stack: Stack) -> AsyncIterator[list[Gateway]]:
    """Two gateways beside the stack's, quick to judge a silent peer dead (a 1 s lease), and to
    cancel an orphan (a 1 s resume grace)."""
    started: list[Gateway] = []
    for n in range(2):
        port = free_port()
        process = start_service(
            stack,
            "tiller.gateway",
            stack.data_dir / "logs" / f"gateway-death-{n}.log",
            TILLER_GATEWAY_PORT=str(port),
            TILLER_GATEWAY_GRPC_PORT=str(free_port()),
            TILLER_GATEWAY_BACKGROUND_LEASE_SECONDS="1",
            TILLER_GATEWAY_RESUME_GRACE_SECONDS="1",
        )
        started.append(Gateway(port, process))
    for gateway in started:

        def ready(url: str = gateway.base_url) -> bool:
            try:
                return httpx.get(url.removesuffix("/v1") + "/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(ready, timeout=60), "a gateway did not start"
    yield started
    for gateway in started:
        stop_service(gateway.process)


class Reader:
    """One client's stream: its text and the id of the last event it saw."""

    def __init__(self) -> None:
        self.request_id = ""
        self.last_id = ""
        self.text = ""
        self.events = 0
        self.ended = False

    def take(self, lines: list[str]) -> None:
        for line in lines:
            if line.startswith("id: "):
                self.last_id = line.removeprefix("id: ")
            elif line == "data: [DONE]":
                self.ended = True
            elif (chunk := chunks_of(line)) is not None:
                assert "error" not in chunk, chunk
                self.request_id = chunk["id"]
                for choice in chunk["choices"]:
                    self.text += choice["delta"].get("content") or ""
                self.events += 1

    async def read(self, http: httpx.AsyncClient, method: str, url: str, **kw: object) -> None:
        """Read until the stream ends or breaks (its gateway killed)."""
        try:
            async with http.stream(method, url, **kw) as response:  # type: ignore[arg-type]
                assert response.status_code == 200, await response.aread()
                lines: list[str] = []
                async for line in response.aiter_lines():
                    lines.append(line)
                    if not line:  # an SSE event ends
                        self.take(lines)
                        lines = []
                self.take(lines)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            pass  # the gateway died under it


async def until(predicate: Callable[[], bool], timeout: float) -> bool:
    """wait_for, without blocking the loop the readers run on."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def usage_of(stack: Stack, key: str) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http:
        reply = await http.get("/usage", headers={"authorization": f"Bearer {key}"})
    assert reply.status_code == 200, reply.text
    totals: dict[str, int] = reply.json()["totals"]
    return totals


async def test_ten_streams_of_a_killed_gateway_resume_on_another_whole_and_once(
    stack: Stack, gateways: list[Gateway]
) -> None:
    doomed, survivor = gateways
    key = await new_key(stack, "death-ten", concurrency=10)
    headers = {"authorization": f"Bearer {key}"}
    readers = [Reader() for _ in range(10)]
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        reading = [
            asyncio.create_task(
                r.read(
                    http,
                    "POST",
                    f"{doomed.base_url}/chat/completions",
                    json=body(f"s{n} {LONG}", stream=True, stream_options={"include_usage": True}),
                )
            )
            for n, r in enumerate(readers)
        ]
        # Every stream has part of its answer, none all of it: then the gateway dies.
        assert await until(lambda: all(r.events >= 3 for r in readers), timeout=30)
        os.kill(doomed.process.pid, signal.SIGKILL)
        await asyncio.gather(*reading)
        assert not any(r.ended for r in readers), "an answer ended before the kill: too short"
        cut = [len(r.text) for r in readers]
        # Each client resumes on the other gateway after the last event it saw.
        await asyncio.gather(
            *(
                r.read(
                    http,
                    "GET",
                    f"{survivor.base_url}/chat/completions/{r.request_id}/stream",
                    headers={"last-event-id": r.last_id},
                )
                for r in readers
            )
        )
        print(f"\ncut at {cut} characters; resumed on the other gateway")
        for n, reader in enumerate(readers):
            assert reader.ended
            assert reader.text == f"You said: s{n} {LONG}", reader.text[-80:]
        # The other gateway took the requests up (their gateway went silent) and settled them.
        http.base_url = httpx.URL(survivor.base_url + "/")
        for reader in readers:
            done = await poll_until_done(http, reader.request_id)
            assert done["status"] == "completed"
    # Charged once each, for the whole answer: usage is the engine's count (the demo engine
    # counts a word a token).
    usage = await usage_of(stack, key)
    words = sum(len(f"You said: s{n} {LONG}".split()) for n in range(10))
    assert usage["requests"] == 10
    assert usage["completion_tokens"] == words


async def test_a_stream_nobody_resumes_is_cancelled_and_charged_what_its_engine_wrote(
    stack: Stack, gateways: list[Gateway]
) -> None:
    doomed, survivor = gateways
    key = await new_key(stack, "death-orphan", concurrency=1)
    headers = {"authorization": f"Bearer {key}"}
    # About 4 s of answer: it is cancelled about 2 s after the kill (1 s to judge the gateway
    # dead, 1 s of grace), before it ends.
    content = " ".join(f"w{i}" for i in range(4000))
    reader = Reader()
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        reading = asyncio.create_task(
            reader.read(
                http, "POST", f"{doomed.base_url}/chat/completions", json=body(content, stream=True)
            )
        )
        assert await until(lambda: reader.events >= 3, timeout=30)
        os.kill(doomed.process.pid, signal.SIGKILL)
        await reading
        # Nobody resumes it: the other gateway takes it up and, after the grace, cancels it.
        http.base_url = httpx.URL(survivor.base_url + "/")
        done = await poll_until_done(http, reader.request_id)
        assert done["status"] == "cancelled", done
        # The key's one slot is free again once it is settled.
        again = await http.post(f"{survivor.base_url}/chat/completions", json=body("again"))
        assert again.status_code == 200, again.text
        # Its stream ends with the cancellation; what the engine wrote is what is charged.
        streamed = await http.get(
            f"{survivor.base_url}/chat/completions/{reader.request_id}/stream"
        )
    lines = streamed.text.splitlines()
    chunks = [c for line in lines if (c := chunks_of(line))]
    assert "error" in chunks[-1] and chunks[-1]["error"]["code"] == "cancelled", chunks[-1]
    written = "".join(
        choice["delta"].get("content") or "" for c in chunks[:-1] for choice in c["choices"]
    )
    assert 0 < len(written) < len(f"You said: {content}")
    usage = await usage_of(stack, key)
    assert usage["completion_tokens"] == len(written.split()) + 3  # + "You said: again"
    print(f"\norphan cancelled after {len(written.split())} words; usage {orjson.dumps(usage)!r}")
