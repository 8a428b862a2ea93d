"""POST /v1/completions (the legacy completions API) through the whole stack, with the official
openai SDK, against the demo engine's /v1/completions."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support import Stack


@pytest.fixture
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.base_url, api_key=stack.admin_key, max_retries=0) as client:
        yield client


def test_a_completion(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="demo", prompt="Hello Tiller", max_tokens=16)
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert completion.choices[0].text == "You said: Hello Tiller"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, 4)


def test_a_streamed_completion_with_usage(client: openai.OpenAI) -> None:
    stream = client.completions.create(
        model="demo",
        prompt=["one two three"],
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == "You said: one"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


def test_unsupported_completion_parameters_are_refused_by_name(stack: Stack) -> None:
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as http:
        suffix = http.post("/completions", json={"model": "demo", "prompt": "hi", "suffix": "!"})
        echo = http.post("/completions", json={"model": "demo", "prompt": "hi", "echo": True})
        two = http.post("/completions", json={"model": "demo", "prompt": ["a", "b"]})
    assert suffix.status_code == 400 and suffix.json()["error"]["param"] == "suffix"
    assert echo.status_code == 400 and echo.json()["error"]["param"] == "echo"
    assert two.status_code == 400 and two.json()["error"]["param"] == "prompt"
