from __future__ import annotations

from dataclasses import dataclass

from tiller.common.internal_tls import InternalPlaneSettings
from tiller.common.settings import load

PREFIX = "TILLER_ROUTER_"


@dataclass(frozen=True)
class RouterSettings(InternalPlaneSettings):
    host: str = "127.0.0.1"
    port: int = 50052
    # A plaintext port serving only the gRPC health service (Kubernetes' gRPC probes speak no
    # TLS); 0: none.
    health_port: int = 0
    models_file: str = "models.yaml"
    # How often the file is checked for changes (SIGHUP checks at once); 0 turns reloading off.
    reload_seconds: float = 1.0
    metrics_port: int = 0  # GET /metrics (Prometheus) on this port; 0: not served
    log_level: str = "info"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def health_address(self) -> str | None:
        return f"{self.host}:{self.health_port}" if self.health_port else None

    @classmethod
    def from_env(cls) -> RouterSettings:
        return load(cls, PREFIX)
