"""The ToyLM adapter against a running ToyLM (docs/adapters.md, step 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from tests.support import closed_port, free_port
from tests.toy_adapter.adapter import ToyAdapter
from tests.toy_adapter.engine import toy_app
from tiller.common.errors import ContextLengthExceeded, EngineUnavailable, EngineUnreachable
from tiller.contract import engines
from tiller.contract.requests import Chat, Message, Sampling, Target, TextCompletion
from tiller.contract.results import Usage
from tiller.router.config import parse
from tiller.worker import adapters
from tiller.worker.adapters.base import AdapterResources, EngineRequest


@pytest.fixture
async def toy_url() -> AsyncIterator[str]:
    """A ToyLM listening on a free port."""
    runner = web.AppRunner(toy_app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def adapter() -> AsyncIterator[ToyAdapter]:
    async with aiohttp.ClientSession() as http:
        yield ToyAdapter(AdapterResources(http=http))


def ask(endpoint: str, text: str, max_tokens: int | None = None) -> EngineRequest:
    target = Target("toy-1", "toy", endpoint, "toy", "tiller.toy-1")
    chat = Chat((Message("user", text),))
    return EngineRequest(target, chat, Sampling(max_tokens=max_tokens), 10.0)


async def test_predict_returns_the_whole_answer_and_its_usage(
    adapter: ToyAdapter, toy_url: str
) -> None:
    completion = await adapter.predict(ask(toy_url, "hello toy"))
    assert completion.text == "USER: HELLO TOY"
    assert (completion.finish_reason, completion.usage) == ("stop", Usage(3, 3))
    legacy = EngineRequest(ask(toy_url, "").target, TextCompletion("once upon"), Sampling(), 10.0)
    assert (await adapter.predict(legacy)).text == "ONCE UPON"


async def test_stream_yields_each_token_then_the_finish_and_usage(
    adapter: ToyAdapter, toy_url: str
) -> None:
    deltas = [d async for d in adapter.stream(ask(toy_url, "one two three", max_tokens=2))]
    assert [d.text for d in deltas] == ["USER:", " ONE", ""]
    assert (deltas[-1].finish_reason, deltas[-1].usage) == ("length", Usage(4, 2))


async def test_failures_are_classified_at_the_boundary(adapter: ToyAdapter, toy_url: str) -> None:
    with pytest.raises(EngineUnavailable) as busy:  # a 503: retryable
        await adapter.predict(ask(toy_url, "OVERLOADED"))
    with pytest.raises(ContextLengthExceeded) as long:  # a 400: no retry can help
        await adapter.predict(ask(toy_url, "word " * 60))
    with pytest.raises(EngineUnreachable):  # nobody listening: retryable, or waited for
        await adapter.predict(ask(f"http://127.0.0.1:{closed_port()}", "hello"))
    assert busy.value.retryable and not long.value.retryable


async def test_health(adapter: ToyAdapter, toy_url: str) -> None:
    assert await adapter.health(ask(toy_url, "").target)
    assert not await adapter.health(ask(f"http://127.0.0.1:{closed_port()}", "").target)


def test_registered_it_is_a_models_yaml_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    # The lines a real adapter adds: its kind to KINDS in services/contract/engines/__init__.py
    # (an HTTP engine with the API-key options), its class to REGISTRY in
    # services/worker/adapters/__init__.py.
    monkeypatch.setitem(engines.KINDS, "toy", engines.HTTP)
    monkeypatch.setitem(adapters.REGISTRY, "toy", "tests.toy_adapter.adapter:ToyAdapter")
    models = parse(
        "models:\n  toy:\n    deployments:\n"
        "      - {adapter: toy, endpoint: 'http://toylm:8000', task_queue: tiller.toy-1}\n"
    )
    assert models.models["toy"].deployments[0].adapter == "toy"
    assert adapters.adapter_class("toy") is ToyAdapter
