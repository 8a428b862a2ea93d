"""Temporal past the dev server: TLS with the cluster's own CA, a client certificate (an mTLS
cluster, or Temporal Cloud's certificate auth) and an API key (Temporal Cloud's bearer token).
A real nginx stands in for such a frontend (TLS, client certificates checked, the API key
required) in front of the stack's Temporal; Tiller's own connection code, from its settings,
gets through it, and is refused without the certificate or the key. Needs nginx, as
test_nginx.py does; without it the test is skipped, saying so."""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_nginx import NGINX
from tests.support import TEST_PAYLOAD_KEYS, Stack, free_port, wait_for
from tiller.cli import certs
from tiller.common import temporal
from tiller.common.lifecycle import StartupError
from tiller.common.payload_codec import PayloadKeys
from tiller.worker.settings import WorkerSettings

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install nginx-light)"
)


@dataclasses.dataclass(frozen=True)
class Frontend:
    address: str
    tls: Path  # the CA, the frontend's certificate ("temporal") and a client's ("tiller")
    api_key: str


@pytest.fixture
def frontend(stack: Stack, tmp_path: Path) -> Iterator[Frontend]:
    tls = tmp_path / "tls"
    certs.make(tls, None, names=("temporal", "tiller"))
    api_key = "temporal-cloud-" + secrets.token_hex(8)
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log warn;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {tls}/temporal.crt;
        ssl_certificate_key {tls}/temporal.key;
        ssl_client_certificate {tls}/ca.crt;
        ssl_verify_client on;
        location / {{
            if ($http_authorization != "Bearer {api_key}") {{ return 401; }}
            grpc_pass grpc://{stack.temporal_address};
        }}
    }}
}}
"""
    )
    process = subprocess.Popen([str(NGINX), "-c", str(conf), "-p", str(tmp_path)])
    try:
        assert wait_for(lambda: (tmp_path / "nginx.pid").exists(), timeout=10)
        yield Frontend(f"127.0.0.1:{port}", tls, api_key)
    finally:
        process.terminate()
        process.wait(10)


def settings(frontend: Frontend, **changes: object) -> WorkerSettings:
    tls = frontend.tls
    base = WorkerSettings(
        temporal_address=frontend.address,
        temporal_tls_ca_file=str(tls / "ca.crt"),
        temporal_tls_cert_file=str(tls / "tiller.crt"),
        temporal_tls_key_file=str(tls / "tiller.key"),
        temporal_tls_server_name="temporal",
        temporal_api_key=frontend.api_key,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


async def connect(s: WorkerSettings) -> bool:
    client = await temporal.connect(
        s.temporal_address,
        "default",
        wait_seconds=2,
        keys=PayloadKeys.parse(TEST_PAYLOAD_KEYS),
        access=temporal.TemporalAccess.of(s),
    )
    return await client.service_client.check_health()


async def test_tls_a_client_certificate_and_an_api_key_get_through(frontend: Frontend) -> None:
    assert await connect(settings(frontend))


@pytest.mark.parametrize(
    "without",
    [
        {"temporal_api_key": None},  # nginx answers 401
        {"temporal_tls_cert_file": None, "temporal_tls_key_file": None},  # handshake refused
        {"temporal_tls_ca_file": None},  # the frontend's certificate is not trusted
    ],
    ids=["no API key", "no client certificate", "no CA"],
)
async def test_without_any_of_them_tiller_does_not_connect(
    frontend: Frontend, without: dict[str, object]
) -> None:
    with pytest.raises(StartupError, match="cannot reach Temporal"):
        await connect(settings(frontend, **without))


def test_an_api_key_file_and_a_half_configured_certificate() -> None:
    half = WorkerSettings(temporal_tls_cert_file="/x.crt")
    with pytest.raises(StartupError, match="together"):
        temporal.TemporalAccess.of(half)
    access = temporal.TemporalAccess.of(WorkerSettings(temporal_api_key="k"))
    assert access.options()["api_key"] == "k" and access.tls is not None  # a key means TLS
