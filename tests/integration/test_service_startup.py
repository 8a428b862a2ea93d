"""Each service alone, as a container runs it: a start-up problem is one line and exit 1."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.support import ROOT, tls_dir_of_tests


def run_service(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tiller", name],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "variable"),
    [
        ("gateway", "TILLER_GATEWAY_PORT"),
        ("router", "TILLER_ROUTER_PORT"),
        ("quota", "TILLER_QUOTA_PORT"),
        ("demo-engine", "TILLER_DEMO_PORT"),
    ],
)
def test_a_taken_port_is_one_line(name: str, variable: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_service(
            name,
            {
                variable: str(port),
                "TILLER_ROUTER_MODELS_FILE": "models.yaml",
                "TILLER_INTERNAL_TLS_DIR": tls_dir_of_tests(),
            },
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"tiller {name}: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_a_bad_setting_is_one_line() -> None:
    result = run_service("gateway", {"TILLER_GATEWAY_PORT": "eighty"})
    assert result.returncode == 1
    assert (
        result.stderr == "tiller gateway: TILLER_GATEWAY_PORT: expected an integer, got 'eighty'\n"
    )


@pytest.mark.parametrize("name", ["router", "quota"])
def test_without_certificates_or_an_explicit_plaintext_plane_a_service_does_not_start(
    name: str,
) -> None:
    """Fail closed: the internal plane is mutual TLS unless the operator says otherwise."""
    result = run_service(name, {"TILLER_ROUTER_MODELS_FILE": "models.yaml"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        f"tiller {name}: set TILLER_INTERNAL_TLS_DIR to this deployment's internal certificates"
    )
