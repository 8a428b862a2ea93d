"""POST /v1/embeddings through the whole stack, with the official openai SDK (which asks for
base64), against the demo engine's deterministic vectors."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support import Stack
from tiller.demo_engine.generation import embedding


def test_a_batch_of_embeddings_through_the_sdk(stack: Stack) -> None:
    with openai.OpenAI(base_url=stack.base_url, api_key=stack.admin_key, max_retries=0) as client:
        reply = client.embeddings.create(model="demo", input=["hello world", "tiller"])
    assert [d.index for d in reply.data] == [0, 1]
    for item, text in zip(reply.data, ["hello world", "tiller"], strict=True):
        assert item.embedding == pytest.approx(embedding(text), abs=1e-6)  # float32 on the wire
    assert reply.usage.prompt_tokens == 3 and reply.usage.total_tokens == 3
    assert reply.model == "demo"


def test_float_encoding_and_refusals(stack: Stack) -> None:
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as http:
        floats = http.post(
            "/embeddings", json={"model": "demo", "input": "one", "encoding_format": "float"}
        )
        tokens = http.post("/embeddings", json={"model": "demo", "input": [[1, 2, 3]]})
        sized = http.post("/embeddings", json={"model": "demo", "input": "x", "dimensions": 4})
        unsized = http.post("/embeddings", json={"model": "demo", "input": "x", "dimensions": 0})
        huge = http.post("/embeddings", json={"model": "demo", "input": ["x" * 600_000] * 2})
    assert floats.status_code == 200, floats.text
    assert floats.json()["data"][0]["embedding"] == pytest.approx(embedding("one"))
    assert floats.headers["x-request-id"].startswith("embd-")
    assert tokens.status_code == 400 and tokens.json()["error"]["param"] == "input"
    # `dimensions` is the engine's to honour or refuse (the demo engine ignores it); it is
    # passed on as sent, and a value that cannot be one is refused here.
    assert sized.status_code == 200, sized.text
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.demo_port}", timeout=10) as engine:
        sent = [r["body"] for r in engine.get("/received").json()["data"]]
    assert {"model": "demo", "input": ["x"], "dimensions": 4} in sent
    assert unsized.status_code == 400 and unsized.json()["error"]["param"] == "dimensions"
    assert huge.status_code == 400 and "split the batch" in huge.json()["error"]["message"]
