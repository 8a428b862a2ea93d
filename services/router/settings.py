from __future__ import annotations

from dataclasses import dataclass

from tiller.common.settings import load

PREFIX = "TILLER_ROUTER_"


@dataclass(frozen=True)
class RouterSettings:
    host: str = "127.0.0.1"
    port: int = 50052
    models_file: str = "models.yaml"
    # How often the file is checked for changes (SIGHUP checks at once); 0 turns reloading off.
    reload_seconds: float = 1.0
    metrics_port: int = 0  # GET /metrics (Prometheus) on this port; 0: not served
    log_level: str = "info"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_env(cls) -> RouterSettings:
        return load(cls, PREFIX)
