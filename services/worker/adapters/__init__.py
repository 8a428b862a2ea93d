"""The engine adapter registry, keyed by the `adapter` value of a deployment in models.yaml.

Entries name their modules lazily so the router can validate a deployment (its endpoint and its
`options:`) without importing HTTP or gRPC clients it never uses: each kind's options checker
lives in a module of its own with no engine client in it.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from tiller.worker.adapters.base import AdapterResources, EngineAdapter


@dataclass(frozen=True)
class Kind:
    adapter: str  # "module:Class" of the adapter (workers only)
    transport: Literal["http", "grpc"]  # what the endpoint is: a base URL, or host:port
    options: str  # "module:function" that raises ValueError for bad `options:`


_HTTP_OPTIONS = "tiller.worker.adapters.http_options:check_options"
_OPENAI = "tiller.worker.adapters.openai_compatible:OpenAICompatibleAdapter"

REGISTRY: dict[str, Kind] = {
    # vLLM serves the OpenAI HTTP API; so do llama.cpp, SGLang, Ollama, hosted APIs and our
    # demo engine. The two kinds differ in defaults (vLLM can continue a partial answer).
    "vllm": Kind(_OPENAI, "http", _HTTP_OPTIONS),
    "openai": Kind(_OPENAI, "http", _HTTP_OPTIONS),
    # Hugging Face text-generation-inference: its Messages API and native /generate.
    "tgi": Kind("tiller.worker.adapters.tgi:TGIAdapter", "http", _HTTP_OPTIONS),
    # NVIDIA Triton over gRPC (tritonclient): KServe v2 infer, and decoupled streaming models.
    "triton": Kind(
        "tiller.worker.adapters.triton:TritonAdapter",
        "grpc",
        "tiller.worker.adapters.triton_options:check_options",
    ),
}

KINDS = frozenset(REGISTRY)


def _load(path: str) -> Any:
    module_name, _, name = path.partition(":")
    return getattr(importlib.import_module(module_name), name)


def adapter_class(kind: str) -> type[EngineAdapter]:
    cls: type[EngineAdapter] = _load(REGISTRY[kind].adapter)
    return cls


class Adapters:
    """One adapter of each kind, created on first use: a worker imports only the engine
    clients its deployments need (tritonclient only where a Triton deployment is served)."""

    def __init__(self, resources: AdapterResources) -> None:
        self.resources = resources
        self._made: dict[str, EngineAdapter] = {}

    def __getitem__(self, kind: str) -> EngineAdapter:
        adapter = self._made.get(kind)
        if adapter is None:
            adapter = self._made[kind] = adapter_class(kind)(self.resources)
        return adapter

    async def aclose(self) -> None:
        for adapter in self._made.values():
            await adapter.aclose()
        self._made.clear()


def check_endpoint(kind: str, endpoint: str) -> str:
    """The endpoint, normalised, or ValueError saying what the adapter expects."""
    if REGISTRY[kind].transport == "http":
        if not re.match(r"^https?://[^/\s]+", endpoint):
            raise ValueError(f"expected an http:// or https:// URL, got {endpoint!r}")
        return endpoint.rstrip("/")
    address = re.sub(r"^grpcs?://", "", endpoint).rstrip("/")
    if not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}", address):
        raise ValueError(f"expected host:port (or grpc:// or grpcs:// before it), got {endpoint!r}")
    return endpoint.rstrip("/")


def check_options(kind: str, options: dict[str, Any]) -> None:
    """Raise ValueError naming the bad option, for the router to refuse models.yaml."""
    checker: Callable[[dict[str, Any]], None] = _load(REGISTRY[kind].options)
    try:
        checker(options)
    except ValueError as error:  # the caller names the `options` field itself
        raise ValueError(str(error).removeprefix("options.")) from None
