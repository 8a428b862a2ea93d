from __future__ import annotations

from dataclasses import dataclass

from tiller.common.internal_tls import InternalPlaneSettings
from tiller.common.settings import load, shared

PREFIX = "TILLER_QUOTA_"


@dataclass(frozen=True)
class QuotaSettings(InternalPlaneSettings):
    host: str = "127.0.0.1"
    port: int = 50053
    # A plaintext port serving only the gRPC health service (Kubernetes' gRPC probes speak no
    # TLS); 0: none.
    health_port: int = 0
    redis_url: str = shared("TILLER_REDIS_URL", "redis://127.0.0.1:6379/0")
    key_prefix: str = shared("TILLER_KEY_PREFIX", "tiller:")
    # The bootstrap admin key; replaces the previous bootstrap key when it changes.
    admin_key: str | None = shared("TILLER_ADMIN_KEY", None)
    admin_rpm: int = 0  # 0 = unlimited
    # How long a request's concurrency lease lives unless the gateway serving it renews it (it
    # does every third of this): the most a dead gateway's requests keep their slots.
    lease_ttl_seconds: float = 60.0
    redis_timeout_seconds: float = 2.0
    # How often Redis is asked to rewrite its append-only file, so expired answers leave its
    # disk (compaction.py); 0: never (Redis's own settings decide).
    redis_rewrite_seconds: float = 60.0
    # How long the administration audit log keeps an entry.
    audit_days: float = 400.0
    metrics_port: int = 0  # GET /metrics (Prometheus) on this port; 0: not served
    log_level: str = "info"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def health_address(self) -> str | None:
        return f"{self.host}:{self.health_port}" if self.health_port else None

    @classmethod
    def from_env(cls) -> QuotaSettings:
        return load(cls, PREFIX)
