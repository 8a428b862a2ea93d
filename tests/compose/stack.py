"""The compose project that tests/compose/tier.sh runs, seen as its operator sees it: the same
`docker-compose` and `docker` commands (COMPOSE_PROJECT_NAME and COMPOSE_FILE come from the
tier), and the containers they report."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from openai import DefaultHttpxClient, OpenAI

from tests.e2e.test_metrics import scrape

ROOT = Path(__file__).resolve().parents[2]
# Where compose.yaml's nginx publishes the gateways on the host.
HTTP = "http://127.0.0.1:8080"
HTTPS = "https://localhost:8443"
GRPC = "127.0.0.1:50051"
GRPC_TLS = "localhost:50443"
# Inside the network: what Prometheus would scrape (compose.yaml's metrics ports).
GATEWAY_METRICS, WORKER_METRICS = 8080, 9103
SERVICES = ("redis", "temporal", "demo-engine", "router", "quota", "worker", "gateway", "nginx")
# Services that run once and exit (the internal plane's certificates) before the others start.
ONE_SHOT = ("certs",)
START_TIMEOUT = 240.0


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    service: str
    number: int
    state: str  # running, exited, ...
    health: str  # healthy, starting, unhealthy; "" without a healthcheck
    ip: str

    def metrics(self, port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
        return scrape(f"http://{self.ip}:{port}/metrics")


@dataclass(frozen=True)
class Project:
    admin_key: str
    ca: Path  # the certificate nginx serves on 8443 and 50443

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def openai(self, base: str, key: str | None = None) -> OpenAI:
        verify: ssl.SSLContext | bool = self.tls() if base.startswith("https") else True
        return OpenAI(
            base_url=f"{base}/v1",
            api_key=key or self.admin_key,
            http_client=DefaultHttpxClient(verify=verify),  # the SDK's own, with our CA
            timeout=120,
            max_retries=0,  # a retried request would hide what the test looks for
        )

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {key or self.admin_key}"}


def run(argv: list[str], timeout: float) -> str:
    env = os.environ | {"COLUMNS": "200"}  # docker-compose's tables: one line a container
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def compose(*args: str, timeout: float = 300) -> str:
    return run(["docker-compose", *args], timeout)


def docker(*args: str, timeout: float = 120) -> str:
    return run(["docker", *args], timeout)


def containers(service: str | None = None) -> list[Container]:
    """The project's containers, running or not, by service and replica number."""
    label = f"label=com.docker.compose.project={os.environ['COMPOSE_PROJECT_NAME']}"
    ids = docker("ps", "-a", "-q", "--filter", label).split()
    found = [_container(c) for c in json.loads(docker("inspect", *ids))] if ids else []
    return sorted(
        (c for c in found if service in (None, c.service)), key=lambda c: (c.service, c.number)
    )


def _container(spec: dict[str, object]) -> Container:
    config, state = spec["Config"], spec["State"]
    assert isinstance(config, dict) and isinstance(state, dict)
    labels = config["Labels"]
    networks = spec["NetworkSettings"]["Networks"]  # type: ignore[index]
    return Container(
        id=str(spec["Id"])[:12],
        name=str(spec["Name"]).lstrip("/"),
        service=labels["com.docker.compose.service"],
        number=int(labels["com.docker.compose.container-number"]),
        state=state["Status"],
        health=(state.get("Health") or {}).get("Status", ""),
        ip=next((n["IPAddress"] for n in networks.values() if n["IPAddress"]), ""),
    )


def running(service: str) -> list[Container]:
    return [c for c in containers(service) if c.state == "running"]


def wait_healthy(timeout: float = START_TIMEOUT) -> list[Container]:
    """Every service has a running container and every running one is healthy."""
    deadline = time.monotonic() + timeout
    while True:
        up = [c for c in containers() if c.state == "running"]
        if {c.service for c in up} >= set(SERVICES) and all(c.health == "healthy" for c in up):
            return up
        if time.monotonic() > deadline:
            states = "\n".join(f"{c.name}: {c.state} {c.health}" for c in containers())
            raise AssertionError(f"not all healthy after {timeout:.0f} s:\n{states}")
        time.sleep(1)


def up(*args: str) -> list[Container]:
    """`docker-compose up -d` (the tier built the images), then every service healthy, and
    nginx told of the gateways there are now (it resolves `gateway` when it loads its
    configuration: docs/operations.md)."""
    compose("up", "-d", "--no-build", *args)
    up = wait_healthy()
    compose("exec", "-T", "nginx", "nginx", "-s", "reload")
    return up
