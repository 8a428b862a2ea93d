"""The router's metrics (common/metrics.py serves them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from tiller.router.table import RoutingTable

RESOLVES = Counter(
    "tiller_router_resolves", "Model names resolved, by outcome (found, not_found).", ["outcome"]
)
RELOADS = Counter(
    "tiller_router_reloads", "models.yaml reloads, by outcome (applied, refused).", ["outcome"]
)
CONFIG_VERSION = Gauge("tiller_router_config_version", "Version of the models.yaml served.")
MODELS = Gauge("tiller_router_models", "Models the router serves.")


def serving(table: RoutingTable) -> None:
    CONFIG_VERSION.set(table.version)
    MODELS.set(len(table.models))
