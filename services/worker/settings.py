from __future__ import annotations

from dataclasses import dataclass

from tiller.common.internal_tls import InternalPlaneSettings
from tiller.common.settings import load, shared
from tiller.common.temporal import TemporalAccessSettings

PREFIX = "TILLER_WORKER_"


@dataclass(frozen=True)
class WorkerSettings(InternalPlaneSettings, TemporalAccessSettings):
    temporal_address: str = shared("TILLER_TEMPORAL_ADDRESS", "127.0.0.1:7233")
    temporal_namespace: str = shared("TILLER_TEMPORAL_NAMESPACE", "default")
    # Keys that seal every Temporal payload (common/payload_codec.py): one of the two is needed.
    payload_keys: str | None = shared("TILLER_PAYLOAD_KEYS", None)
    payload_keys_file: str | None = shared("TILLER_PAYLOAD_KEYS_FILE", None)
    redis_url: str = shared("TILLER_REDIS_URL", "redis://127.0.0.1:6379/0")
    router_address: str = shared("TILLER_ROUTER_ADDRESS", "127.0.0.1:50052")
    # Prefix of Tiller's Redis keys and channels (the gateway's cancel signals).
    key_prefix: str = shared("TILLER_KEY_PREFIX", "tiller:")
    # Task queues to poll; empty means every queue in the router's models.yaml.
    task_queues: tuple[str, ...] = ()
    # Seconds an answer's event stream stays in Redis after its last event.
    event_ttl_seconds: int = 300
    heartbeat_interval_seconds: float = 2.0
    # A streamed answer's deltas are appended to its event stream at most this often (the first
    # at once); what arrives in between goes out as one event. 0: each as soon as it can.
    stream_interval_seconds: float = 0.05
    # Redis away: how long an attempt holds its answer's events and tries again before it fails
    # (it heartbeats meanwhile); an answer that ended is then read from Temporal's result.
    redis_outage_seconds: float = 120.0
    # How often the router is asked whether models.yaml changed (new or removed task queues).
    reload_seconds: float = 2.0
    # How long start-up waits for Temporal and the router (compose starts all at once).
    dependency_wait_seconds: float = 60.0
    # How long a stopping worker lets running attempts finish before Temporal moves them.
    shutdown_grace_seconds: float = 10.0
    # GET /metrics (Prometheus): Tiller's on metrics_port, Temporal's SDK worker metrics on
    # sdk_metrics_port (0: not served).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    sdk_metrics_port: int = 0
    log_level: str = "info"

    @classmethod
    def from_env(cls) -> WorkerSettings:
        return load(cls, PREFIX)
