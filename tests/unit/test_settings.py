from __future__ import annotations

from dataclasses import dataclass

import pytest

from tiller.common.settings import SettingsError, env_names, load, shared
from tiller.gateway.settings import GatewaySettings


@dataclass(frozen=True)
class Example:
    port: int = 1
    ratio: float = 0.5
    enabled: bool = False
    queues: tuple[str, ...] = ()
    key: str | None = None
    redis_url: str = shared("TILLER_REDIS_URL", "redis://default")


def test_defaults_when_nothing_is_set() -> None:
    assert load(Example, "T_", {}) == Example()


def test_values_are_converted_to_the_field_type() -> None:
    env = {"T_PORT": "99", "T_RATIO": "2", "T_ENABLED": "yes", "T_QUEUES": "a, b,,c", "T_KEY": "k"}
    assert load(Example, "T_", env) == Example(99, 2.0, True, ("a", "b", "c"), "k")


def test_service_variable_beats_the_shared_one() -> None:
    assert load(Example, "T_", {"TILLER_REDIS_URL": "shared"}).redis_url == "shared"
    env = {"TILLER_REDIS_URL": "shared", "T_REDIS_URL": "mine"}
    assert load(Example, "T_", env).redis_url == "mine"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [("T_PORT", "eighty", "expected an integer"), ("T_ENABLED", "maybe", "expected true or false")],
)
def test_bad_values_name_the_variable(name: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError, match=f"{name}: {expected}, got '{value}'"):
        load(Example, "T_", {name: value})


def test_env_names_lists_prefixed_and_shared_names() -> None:
    names = env_names(GatewaySettings, "TILLER_GATEWAY_")
    assert {"TILLER_GATEWAY_PORT", "TILLER_REDIS_URL", "TILLER_TEMPORAL_ADDRESS"} <= names
