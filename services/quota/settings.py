from __future__ import annotations

from dataclasses import dataclass

from tiller.common.settings import load, shared

PREFIX = "TILLER_QUOTA_"


@dataclass(frozen=True)
class QuotaSettings:
    host: str = "127.0.0.1"
    port: int = 50053
    redis_url: str = shared("TILLER_REDIS_URL", "redis://127.0.0.1:6379/0")
    key_prefix: str = shared("TILLER_KEY_PREFIX", "tiller:")
    # The bootstrap admin key; replaces the previous bootstrap key when it changes.
    admin_key: str | None = shared("TILLER_ADMIN_KEY", None)
    admin_rpm: int = 0  # 0 = unlimited
    # How long a request's concurrency lease lives unless the gateway serving it renews it (it
    # does every third of this): the most a dead gateway's requests keep their slots.
    lease_ttl_seconds: float = 60.0
    redis_timeout_seconds: float = 2.0
    metrics_port: int = 0  # GET /metrics (Prometheus) on this port; 0: not served
    log_level: str = "info"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_env(cls) -> QuotaSettings:
        return load(cls, PREFIX)
