from __future__ import annotations

from dataclasses import dataclass

from tiller.common.internal_tls import InternalPlaneSettings
from tiller.common.settings import load, shared
from tiller.common.temporal import TemporalAccessSettings

PREFIX = "TILLER_GATEWAY_"


@dataclass(frozen=True)
class GatewaySettings(InternalPlaneSettings, TemporalAccessSettings):
    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int = 50051
    router_address: str = shared("TILLER_ROUTER_ADDRESS", "127.0.0.1:50052")
    quota_address: str = shared("TILLER_QUOTA_ADDRESS", "127.0.0.1:50053")
    temporal_address: str = shared("TILLER_TEMPORAL_ADDRESS", "127.0.0.1:7233")
    temporal_namespace: str = shared("TILLER_TEMPORAL_NAMESPACE", "default")
    # Keys that seal every Temporal payload (common/payload_codec.py): one of the two is needed.
    payload_keys: str | None = shared("TILLER_PAYLOAD_KEYS", None)
    payload_keys_file: str | None = shared("TILLER_PAYLOAD_KEYS_FILE", None)
    redis_url: str = shared("TILLER_REDIS_URL", "redis://127.0.0.1:6379/0")
    key_prefix: str = shared("TILLER_KEY_PREFIX", "tiller:")
    max_body_bytes: int = 4 * 1024 * 1024
    # Deadline of every call to the router and quota services.
    rpc_timeout_seconds: float = 3.0
    # Deadline of starting a request's activity: a burst queues at Temporal's frontend, and
    # waiting there is better than failing the request.
    start_timeout_seconds: float = 30.0
    # With no event for this long, check that the request's activity is still alive.
    idle_check_seconds: float = 5.0
    # Tokens reserved for the answer of a request that sets no max_tokens (and whose model has
    # no default): what tokens-per-minute limits and budgets count until the engine's real count.
    default_reserve_tokens: int = 1024
    # Tokens reserved for what an engine adds to every prompt that the request has no bytes of:
    # a beginning-of-text token, the header where the answer starts, a default system prompt its
    # chat template writes (Llama 3.1's dates: about 30). Part of the prompt's bound
    # (reservations.py); raise it for a template that adds more.
    template_tokens: int = 32
    # How long a route from the router is reused; 0 asks the router on every request.
    route_cache_seconds: float = 2.0
    # While the router cannot be reached, a route resolved this recently is used as it was
    # (logged); 0: never, the request gets the 503.
    route_stale_seconds: float = 600.0
    # How often each deployment's task-queue backlog is asked of Temporal for /metrics (0: off).
    backlog_poll_seconds: float = 5.0
    # How long a background request's record (status, result) stays readable after it ends.
    background_ttl_seconds: int = 86400
    # A gateway watching a background request renews its claim this often (x 1/3); if it
    # stops, another gateway takes the request over within this long.
    background_lease_seconds: float = 30.0
    # A stream whose gateway died may be resumed on any gateway; one nobody resumed within this
    # long after another gateway took it up is cancelled (and charged what its engine wrote).
    resume_grace_seconds: float = 30.0
    # How long a stored response (/v1/responses: its object, and the conversation that
    # previous_response_id continues) is kept, sealed, after it was created.
    responses_ttl_seconds: int = 30 * 86400
    # Where /v1/files keeps uploads and batch outputs, sealed (file_store.py): local disk, one
    # directory the gateways of one host share. `tiller up` passes its data directory's.
    files_dir: str = ".tiller/files"
    # Larger uploads get 413 (OpenAI's limit of a batch's input file).
    files_max_bytes: int = 200 * 1024 * 1024
    # Lines of one batch (/v1/batches) that run at once; each is a request in the lowest
    # priority class, so live traffic goes first (batches/workflow.py).
    batch_concurrency: int = 8
    # Lines per run of a batch's workflow before it continues as new (bounds its history).
    batch_lines_per_run: int = 1000
    # While live requests are being answered on any gateway, a batch line waits up to this long
    # before it starts (batches/live.py); 0: batch lines never wait.
    batch_yield_seconds: float = 2.0
    # On SIGTERM: report not ready (/readyz 503, gRPC health NOT_SERVING) but keep serving for
    # drain_seconds, so load balancers move away; then stop accepting, and give open requests
    # and streams shutdown_grace_seconds to finish; then hand over what is still open.
    drain_seconds: float = 0.0
    shutdown_grace_seconds: float = 30.0
    dependency_wait_seconds: float = 60.0
    log_level: str = "info"

    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @classmethod
    def from_env(cls) -> GatewaySettings:
        return load(cls, PREFIX)
