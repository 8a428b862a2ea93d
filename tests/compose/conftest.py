"""The compose tier: the real compose.yaml as containers, under docker-compose, with
stand-ins for the official images that no registry reachable here serves
(tests/compose/standins.yaml). `./dev test-compose` runs it: tests/compose/tier.sh brings
Docker, builds the images, makes the keys and sets TILLER_COMPOSE_TIER; without it nothing here
is collected. The tests reach the stack as its users do, through nginx on the host's ports, and
act on it as its operator does, with docker-compose and docker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compose.stack import Project, compose, up

collect_ignore_glob = [] if os.environ.get("TILLER_COMPOSE_TIER") else ["test_*.py"]


@pytest.fixture(scope="session")
def project() -> Iterator[Project]:
    """The stack, up and healthy, for the session; removed with its volumes after it."""
    up()
    try:
        yield Project(
            admin_key=os.environ["TILLER_ADMIN_KEY"],
            ca=Path(os.environ["TILLER_COMPOSE_CERTS"]) / "tls.crt",
        )
    finally:
        compose("down", "--volumes", "--remove-orphans", "--timeout", "10")
