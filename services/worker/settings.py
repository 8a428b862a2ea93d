from __future__ import annotations

from dataclasses import dataclass

from tiller.common.settings import load, shared

PREFIX = "TILLER_WORKER_"


@dataclass(frozen=True)
class WorkerSettings:
    temporal_address: str = shared("TILLER_TEMPORAL_ADDRESS", "127.0.0.1:7233")
    temporal_namespace: str = shared("TILLER_TEMPORAL_NAMESPACE", "default")
    # Temporal beyond the dev server (common/temporal.py TemporalAccess): TLS with the
    # cluster's CA and a client certificate, a server name to check, a Temporal Cloud API key.
    temporal_tls: bool = shared("TILLER_TEMPORAL_TLS", False)
    temporal_tls_ca_file: str | None = shared("TILLER_TEMPORAL_TLS_CA_FILE", None)
    temporal_tls_cert_file: str | None = shared("TILLER_TEMPORAL_TLS_CERT_FILE", None)
    temporal_tls_key_file: str | None = shared("TILLER_TEMPORAL_TLS_KEY_FILE", None)
    temporal_tls_server_name: str | None = shared("TILLER_TEMPORAL_TLS_SERVER_NAME", None)
    temporal_api_key: str | None = shared("TILLER_TEMPORAL_API_KEY", None)
    temporal_api_key_file: str | None = shared("TILLER_TEMPORAL_API_KEY_FILE", None)
    # Keys that seal every Temporal payload (common/payload_codec.py): one of the two is needed.
    payload_keys: str | None = shared("TILLER_PAYLOAD_KEYS", None)
    payload_keys_file: str | None = shared("TILLER_PAYLOAD_KEYS_FILE", None)
    # The internal plane (common/internal_tls.py): this deployment's certificates, or the
    # operator's explicit choice of plaintext. One of the two is required.
    internal_tls_dir: str | None = shared("TILLER_INTERNAL_TLS_DIR", None)
    internal_insecure: bool = shared("TILLER_INTERNAL_INSECURE", False)
    redis_url: str = shared("TILLER_REDIS_URL", "redis://127.0.0.1:6379/0")
    router_address: str = shared("TILLER_ROUTER_ADDRESS", "127.0.0.1:50052")
    # Prefix of Tiller's Redis keys and channels (the gateway's cancel signals).
    key_prefix: str = shared("TILLER_KEY_PREFIX", "tiller:")
    # Task queues to poll; empty means every queue in the router's models.yaml.
    task_queues: tuple[str, ...] = ()
    # Seconds an answer's event stream stays in Redis after its last event.
    event_ttl_seconds: int = 300
    heartbeat_interval_seconds: float = 2.0
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
