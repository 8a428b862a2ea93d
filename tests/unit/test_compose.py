"""compose.yaml, checked statically (the compose tier, tests/compose/, runs it): the services
and commands exist, every setting it passes is one the code reads, Temporal gets the dispatch
settings `tiller up` uses, only the nginx edge (and the Temporal UI) publish host ports, so every
Tiller service scales freely, every service has a healthcheck, docker-compose 1.29 can read it,
and the tier's stand-ins swap the official images and nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.support import service_env_names
from tiller.cli.main import SERVICES
from tiller.cli.up import TEMPORAL_DYNAMIC_CONFIG, TEMPORAL_SQLITE_PRAGMAS

ROOT = Path(__file__).resolve().parents[2]
TILLER_SERVICES = {"gateway", "router", "quota", "worker", "demo-engine"}


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def test_every_tiller_service_runs_a_tiller_command() -> None:
    services = compose()["services"]
    assert TILLER_SERVICES | {"redis", "temporal"} <= set(services)
    for name in TILLER_SERVICES:
        (command,) = services[name]["command"]
        assert command in SERVICES, f"{name}: unknown command {command!r}"


def test_every_setting_passed_is_read_by_the_code() -> None:
    read = service_env_names()
    for name in TILLER_SERVICES:
        passed = set(compose()["services"][name].get("environment") or {})
        assert passed <= read, f"{name}: not settings: {sorted(passed - read)}"


def test_temporal_gets_the_settings_tiller_up_uses() -> None:
    command = compose()["services"]["temporal"]["command"]
    dynamic = {
        flag.split("=", 1)[1] for flag in command if flag.startswith("--dynamic-config-value=")
    }
    assert dynamic == {f"{k}={v}" for k, v in TEMPORAL_DYNAMIC_CONFIG.items()}
    pragmas = {flag.split("=", 1)[1] for flag in command if flag.startswith("--sqlite-pragma=")}
    assert pragmas == set(TEMPORAL_SQLITE_PRAGMAS)


def test_only_the_edge_publishes_host_ports_so_every_tiller_service_scales() -> None:
    services = compose()["services"]
    publishing = {name for name, spec in services.items() if spec.get("ports")}
    assert publishing == {"nginx", "temporal"}  # the edge, and the Temporal UI
    # Plain HTTP and gRPC only on the host's loopback; TLS on every interface.
    for published in services["nginx"]["ports"]:
        host_port = int(published.split(":")[-2])
        assert host_port in (8443, 50443) or published.startswith("127.0.0.1:"), published


def test_the_edge_mounts_the_proxy_config_the_nginx_test_streams_through() -> None:
    volumes = compose()["services"]["nginx"]["volumes"]
    sources = {v.split(":")[0] for v in volumes}
    assert {
        "./deploy/nginx/tiller.conf", "./deploy/nginx/proxy.conf", "./deploy/nginx/grpc.conf"
    } <= sources  # fmt: skip
    for source in sources - {"./deploy/nginx/certs"}:
        assert (ROOT / source).is_file(), source
    conf = (ROOT / "deploy/nginx/tiller.conf").read_text()
    assert "include /etc/nginx/tiller/proxy.conf;" in conf
    assert "include /etc/nginx/tiller/grpc.conf;" in conf
    assert "proxy_buffering off;" in (ROOT / "deploy/nginx/proxy.conf").read_text()


def test_every_service_has_a_healthcheck_and_starts_on_healthy_ones() -> None:
    services = compose()["services"]
    for name in ("gateway", "router", "quota", "worker", "demo-engine"):
        test = services[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "tiller", "healthcheck"], name
        assert test[3] in ("grpc", "http")
    one_shot = {name for name, spec in services.items() if spec.get("restart") == "no"}
    assert one_shot == {"certs"}  # makes the internal plane's certificates, then exits
    for name, spec in services.items():
        if "profiles" not in spec and name not in one_shot:  # the GPU engine is optional
            assert spec["healthcheck"]["test"][0] == "CMD", name
            assert spec["restart"] == "unless-stopped", name
            for needed, condition in (spec.get("depends_on") or {}).items():
                done = "service_completed_successfully" if needed in one_shot else "service_healthy"
                assert condition == {"condition": done}, (name, needed)
    # The official Temporal image is one binary at /temporal, from scratch: no shell, no PATH.
    assert services["temporal"]["healthcheck"]["test"][1] == "/temporal"


def test_docker_compose_1_29_reads_it() -> None:
    # It refuses a top-level `name:` (Debian 12's docker-compose; CI runs the file with it).
    assert set(compose()) == {"x-tiller", "services", "volumes"}


def test_the_tiers_stand_ins_swap_the_official_images_and_nothing_else() -> None:
    services = compose()["services"]
    standins = yaml.safe_load((ROOT / "tests/compose/standins.yaml").read_text())
    assert set(standins) == {"services"}
    swapped = {name: services[name]["image"] for name in standins["services"]}
    assert swapped == {  # compose.yaml keeps the official images
        "redis": "redis:7.4-alpine",
        "temporal": "temporalio/temporal:1.9.1",
        "nginx": "nginx:1.27-alpine",
    }
    for name, spec in standins["services"].items():
        repository, _ = spec["image"].split(":")
        assert repository == f"tiller-standin/{name}", spec["image"]
        dockerfile = ROOT / "tests/compose/standins" / f"{name}.Dockerfile"
        assert "STAND-IN for the official" in dockerfile.read_text(), dockerfile
        assert set(spec) - {"image"} <= {"volumes"}, name
        for volume in spec.get("volumes", []):  # the tier's own TLS certificate, nothing else
            assert volume.endswith(":/etc/nginx/certs:ro"), volume
