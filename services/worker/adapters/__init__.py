"""The engine adapter registry: the adapter class of each engine kind (contract/engines/, the
`adapter` value of a deployment in models.yaml).

Entries name their modules lazily: a worker imports only the engine clients its deployments
need (tritonclient only where a Triton deployment is served).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tiller.worker.adapters.base import AdapterResources, EngineAdapter

_OPENAI = "tiller.worker.adapters.openai_compatible:OpenAICompatibleAdapter"

# One entry per kind in contract/engines/KINDS (tests/unit/test_boundaries.py checks both agree).
REGISTRY: dict[str, str] = {
    "vllm": _OPENAI,
    "openai": _OPENAI,
    "tgi": "tiller.worker.adapters.tgi:TGIAdapter",
    "triton": "tiller.worker.adapters.triton:TritonAdapter",
}


def adapter_class(kind: str) -> type[EngineAdapter]:
    module_name, _, name = REGISTRY[kind].partition(":")
    cls: type[EngineAdapter] = getattr(importlib.import_module(module_name), name)
    return cls


class Adapters:
    """One adapter of each kind, created on first use."""

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
