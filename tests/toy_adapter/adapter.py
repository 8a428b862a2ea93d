"""The ToyLM adapter: Tiller's request in ToyLM's protocol, ToyLM's answer as Tiller's deltas,
and every failure classified at the boundary (docs/adapters.md builds it step by step)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from tiller.common.errors import (
    ContextLengthExceeded,
    EngineError,
    EngineUnavailable,
    EngineUnreachable,
)
from tiller.contract.requests import Chat, Embedding, Target, TextCompletion
from tiller.contract.results import Usage
from tiller.worker.adapters.base import Completion, Delta, EngineAdapter, EngineRequest


class ToyAdapter(EngineAdapter):
    async def predict(self, request: EngineRequest) -> Completion:
        try:
            async with self.resources.http.post(**_call(request, stream=False)) as response:
                _check(response.status)
                data = await response.json()
        except aiohttp.ClientConnectorError as error:  # it never got there: worth waiting for
            raise EngineUnreachable(f"ToyLM is unreachable: {error!r}") from None
        except (aiohttp.ClientError, TimeoutError) as error:
            raise EngineUnavailable(f"ToyLM failed: {error!r}") from None
        return Completion(data["text"], data["finish"], _usage(data))

    async def stream(self, request: EngineRequest) -> AsyncIterator[Delta]:
        try:
            async with self.resources.http.post(**_call(request, stream=True)) as response:
                _check(response.status)
                async for line in response.content:
                    data = orjson.loads(line)
                    if data.get("done"):
                        yield Delta(finish_reason=data["finish"], usage=_usage(data))
                    else:
                        yield Delta(text=data["token"])
        except aiohttp.ClientConnectorError as error:  # it never got there: worth waiting for
            raise EngineUnreachable(f"ToyLM is unreachable: {error!r}") from None
        except (aiohttp.ClientError, TimeoutError) as error:
            raise EngineUnavailable(f"ToyLM failed: {error!r}") from None

    async def health(self, target: Target) -> bool:
        try:
            async with self.resources.http.get(f"{target.endpoint}/health") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False


def _call(request: EngineRequest, stream: bool) -> dict[str, Any]:
    """The POST to ToyLM: its URL, its JSON body (the chat as one prompt, or a completion's own
    prompt), the attempt's bound."""
    match request.ask:
        case Chat(messages=messages):
            prompt = "\n".join(f"{m.role}: {m.content or ''}" for m in messages)
        case TextCompletion(prompt=prompt):
            pass
        case Embedding():  # never here: EngineAdapter.embed refuses embeddings first
            raise EngineError("ToyLM does not embed texts.")
    return {
        "url": f"{request.target.endpoint}/generate",
        "json": {"prompt": prompt, "max_tokens": request.sampling.max_tokens, "stream": stream},
        "timeout": aiohttp.ClientTimeout(total=request.timeout_seconds),
    }


def _check(status: int) -> None:
    """ToyLM's refusals as TillerErrors: whether a retry can help is the error's class."""
    if status == 400:
        raise ContextLengthExceeded("The prompt is longer than ToyLM takes (50 words).")
    if status >= 500:
        raise EngineUnavailable(f"ToyLM answered HTTP {status}.")  # retryable
    if status != 200:
        raise EngineError(f"ToyLM answered HTTP {status}.")


def _usage(data: dict[str, Any]) -> Usage:
    return Usage(prompt_tokens=data["prompt_tokens"], completion_tokens=data["tokens"])
