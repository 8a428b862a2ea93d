from __future__ import annotations

from dataclasses import dataclass

from tiller.common.settings import load

PREFIX = "TILLER_DEMO_"


@dataclass(frozen=True)
class DemoSettings:
    host: str = "127.0.0.1"
    port: int = 9000
    served_models: tuple[str, ...] = ("demo",)
    # Models that answer every request with HTTP 500, as an overloaded or broken engine would:
    # for trying failover. None by default.
    failing_models: tuple[str, ...] = ()
    # Served models whose streams break off halfway (the connection drops), as an engine that
    # crashes mid-answer: for trying mid-stream failover. None by default.
    breaking_models: tuple[str, ...] = ()
    # Served models that fail every other request with HTTP 500 (the first, the third, …), as
    # an engine with a passing fault: one retry answers. None by default.
    flaky_models: tuple[str, ...] = ()
    # Models that answer every request with HTTP 500 quoting its last message, as engines'
    # errors quote their input: for checking that no store or log keeps what the error says.
    quoting_models: tuple[str, ...] = ()
    token_delay_ms: float = 15.0  # between streamed tokens, like a real engine's decode step
    first_token_delay_ms: float = 0.0
    max_context_tokens: int = 4096  # longer prompts get vLLM's 400 context-length error
    # Keep the last N request bodies in memory, readable at GET /received: tests check exactly
    # what an engine was sent (PII masking). 0 (the default): nothing is kept.
    record_requests: int = 0
    log_level: str = "warning"

    @classmethod
    def from_env(cls) -> DemoSettings:
        return load(cls, PREFIX)
