"""compose.yaml, checked statically (no Docker engine runs here): the services and commands
exist, every setting it passes is one the code reads, Temporal gets the dispatch settings
`tiller up` uses, and only the gateway publishes host ports (the others scale freely)."""

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


def test_only_the_gateway_publishes_host_ports() -> None:
    services = compose()["services"]
    publishing = {name for name in TILLER_SERVICES if services[name].get("ports")}
    assert publishing == {"gateway"}
