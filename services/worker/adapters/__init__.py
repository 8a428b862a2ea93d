"""The engine adapter registry, keyed by the `adapter` value of a deployment in models.yaml.

Entries name their module lazily so the router can validate adapter names without importing
HTTP or gRPC clients it never uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tiller.worker.adapters.base import EngineAdapter

REGISTRY: dict[str, str] = {
    # vLLM serves the OpenAI HTTP API; so do llama.cpp, SGLang, Ollama and our demo engine.
    "vllm": "tiller.worker.adapters.openai_compatible:OpenAICompatibleAdapter",
    "openai": "tiller.worker.adapters.openai_compatible:OpenAICompatibleAdapter",
}

KINDS = frozenset(REGISTRY)


def adapter_class(kind: str) -> type[EngineAdapter]:
    module_name, _, class_name = REGISTRY[kind].partition(":")
    cls: type[EngineAdapter] = getattr(importlib.import_module(module_name), class_name)
    return cls
