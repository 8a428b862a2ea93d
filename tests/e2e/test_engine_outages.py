"""The engine killed under load and started again some seconds later (issue 21): requests with
nowhere else to go wait for it instead of spending their attempts, so no client sees an error,
and every text is whole and said once (streams cut mid-answer continue where they stopped).
A request whose queue timeout passes while the engine stays down gets a clear error, not a hang;
an error no attempt can fix still fails at once. A stack of its own, so its engine can die."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.own_stack import OwnStack

# `demo` waits for its engine up to 30 s; `impatient`, on the same engine, 2 s. Four slots:
# with twelve streams at once, four are mid-answer and eight wait in Temporal's queue.
MODELS = """\
models:
  demo:
    queue_timeout_seconds: 30
    deployments:
      - name: demo-local
        adapter: openai
        endpoint: http://127.0.0.1:{demo}/v1
        task_queue: outage.demo
        max_concurrency: 4
        resume: continue
  impatient:
    queue_timeout_seconds: 2
    deployments:
      - name: demo-impatient
        adapter: openai
        endpoint: http://127.0.0.1:{demo}/v1
        engine_model: demo
        task_queue: outage.impatient
        resume: continue
"""
STREAMS = 12
DOWN_SECONDS = 6.0


@pytest.fixture
def outage_stack(tmp_path: Path) -> Iterator[OwnStack]:
    stack = OwnStack(tmp_path)
    stack.models_file.write_text(MODELS.format(demo=stack.ports["demo"]))
    stack.env["TILLER_DEMO_TOKEN_DELAY_MS"] = "10"  # 100 words: about a second of answer
    try:
        stack.start_all()
        yield stack
    finally:
        stack.stop()


def prompt_of(n: int) -> str:
    return " ".join(f"s{n}w{i}" for i in range(100))


async def streamed(client: openai.AsyncOpenAI, model: str, prompt: str, into: list[str]) -> None:
    """A streamed answer's text, piece by piece into `into`; an error raises."""
    answer = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], stream=True
    )
    async for chunk in answer:
        if chunk.choices:
            into.append(chunk.choices[0].delta.content or "")


async def test_streams_ride_out_an_engine_restart_and_a_long_outage_is_a_clear_error(
    outage_stack: OwnStack,
) -> None:
    stack = outage_stack
    client = openai.AsyncOpenAI(
        base_url=stack.base_url, api_key=stack.admin_key, max_retries=0, timeout=120
    )
    texts: list[list[str]] = [[] for _ in range(STREAMS)]
    answers = [
        asyncio.create_task(streamed(client, "demo", prompt_of(n), texts[n]))
        for n in range(STREAMS)
    ]
    while sum(1 for t in texts if t) < 4:  # every slot mid-answer
        await asyncio.sleep(0.01)
        assert not any(a.done() for a in answers), "an answer ended before the engine died"
    await asyncio.to_thread(stack.kill, "demo-engine")
    killed = time.monotonic()
    mid_answer = sum(1 for t in texts if t)
    print(f"\nengine SIGKILLed: {mid_answer} streams mid-answer, {STREAMS - mid_answer} queued")
    assert 0 < mid_answer < STREAMS

    # While it is down: a model that waits 2 s says so after 2 s, not after its attempts.
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        await streamed(client, "impatient", "anyone?", [])
    waited = time.monotonic() - started
    print(f"impatient: {caught.value.status_code} after {waited:.2f} s: {caught.value.message}")
    assert caught.value.status_code == 503
    assert "queue timeout (2 s)" in caught.value.message
    assert 1.5 < waited < 6

    await asyncio.sleep(DOWN_SECONDS - (time.monotonic() - killed))
    assert not any(a.done() for a in answers), "an answer ended while the engine was down"
    stack.start("demo-engine")
    outcomes = await asyncio.gather(*answers, return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    whole = sum("".join(t) == f"You said: {prompt_of(n)}" for n, t in enumerate(texts))
    print(f"after {DOWN_SECONDS:g} s down: {len(errors)} errors, {whole} of {STREAMS} whole")
    assert errors == []
    for n, text in enumerate(texts):  # whole and said once: nothing missing, nothing twice
        assert "".join(text) == f"You said: {prompt_of(n)}", n

    # An error no attempt can fix still fails at once.
    started = time.monotonic()
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "word " * 5000}]
        )
    print(f"an over-long prompt: 400 after {time.monotonic() - started:.2f} s")
    assert refused.value.code == "context_length_exceeded"
    assert time.monotonic() - started < 3
    await client.close()
