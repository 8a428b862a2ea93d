"""The edge: a real nginx with deploy/nginx/proxy.conf, terminating TLS in front of the gateway,
passes server-sent events through unbuffered: the first token reaches the client long before
the engine has written the last; with deploy/nginx/grpc.conf it passes the Inference gRPC
service over TLS, streams included; it keeps the gateway's /metrics inside; uploads to /v1/files
pass at their own size limit. Needs Debian's nginx (`apt-get install nginx-light`; CI
installs it); without it the test is skipped, saying so."""

from __future__ import annotations

import datetime
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import ROOT, Stack, chunks_of, free_port, wait_for
from tiller.protos.inference.v1 import inference_pb2, inference_pb2_grpc

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install nginx-light)"
)
WORDS = " ".join(f"w{i}" for i in range(1500))  # about 2 s at the test engine's 1 ms a token


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    crt, pem = directory / "tls.crt", directory / "tls.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return crt, pem


@pytest.fixture
def edge(stack: Stack, tmp_path: Path) -> Iterator[tuple[str, Path, int]]:
    """nginx on free ports, TLS on, in front of the stack's gateway: its URL, CA file and
    gRPC port."""
    crt, key = self_signed(tmp_path)
    port, grpc_port = free_port(), free_port()
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
    proxy_temp_path {tmp_path}/proxy;
    upstream tiller_gateways {{ server 127.0.0.1:{stack.gateway_port}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        include {ROOT / "deploy/nginx/proxy.conf"};
    }}
    upstream tiller_gateways_grpc {{ server 127.0.0.1:{stack.grpc_port}; keepalive 4; }}
    server {{
        listen 127.0.0.1:{grpc_port} ssl http2;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        include {ROOT / "deploy/nginx/grpc.conf"};
    }}
}}
"""
    )
    process = subprocess.Popen([str(NGINX), "-c", str(conf), "-p", str(tmp_path)])
    url = f"https://localhost:{port}"
    try:
        context = ssl.create_default_context(cafile=str(crt))
        assert wait_for(lambda: _up(url, context), timeout=10), (tmp_path / "error.log").read_text()
        yield url, crt, grpc_port
    finally:
        process.terminate()
        process.wait(10)


def _up(url: str, context: ssl.SSLContext) -> bool:
    try:
        return httpx.get(f"{url}/healthz", verify=context).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_stream_is_not_buffered_through_nginx(stack: Stack, edge: tuple[str, Path, int]) -> None:
    url, crt, _ = edge
    context = ssl.create_default_context(cafile=str(crt))
    body = {"model": "demo", "messages": [{"role": "user", "content": WORDS}], "stream": True}
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    started = time.monotonic()
    first = last = 0.0
    pieces = 0
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers=headers, verify=context, timeout=60
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            chunk = chunks_of(line)
            if chunk and any(c["delta"].get("content") for c in chunk.get("choices") or []):
                pieces += 1
                last = time.monotonic() - started
                first = first or last
    print(
        f"\nthrough nginx (TLS): first token at {first:.3f} s, last at {last:.3f} s, {pieces} chunks"
    )
    assert pieces > 10 and first < last / 4  # it streamed: no buffer held the answer back


async def test_grpc_streams_through_nginx_over_tls(
    stack: Stack, edge: tuple[str, Path, int]
) -> None:
    _, crt, port = edge
    credentials = grpc.ssl_channel_credentials(crt.read_bytes())
    request = inference_pb2.GenerateRequest(
        model="demo", messages=[inference_pb2.ChatMessage(role="user", content="through the edge")]
    )
    auth = (("authorization", f"Bearer {stack.admin_key}"),)
    async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        chunks = [c async for c in stub.GenerateStream(request, metadata=auth, timeout=30)]
        assert "".join(c.delta for c in chunks) == "You said: through the edge"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Generate(request, metadata=(("authorization", "Bearer nope"),), timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # the gateway's own status


def test_metrics_stay_inside(stack: Stack, edge: tuple[str, Path, int]) -> None:
    url, crt, _ = edge
    context = ssl.create_default_context(cafile=str(crt))
    assert httpx.get(f"{url}/metrics", verify=context).status_code == 404
    direct = httpx.get(f"http://127.0.0.1:{stack.gateway_port}/metrics")
    assert direct.status_code == 200 and "tiller_requests" in direct.text


def test_an_upload_past_the_json_limit_passes_the_edge(
    stack: Stack, edge: tuple[str, Path, int]
) -> None:
    """/v1/files takes files up to TILLER_GATEWAY_FILES_MAX_BYTES, not the 4 MiB of a JSON body."""
    url, crt, _ = edge
    context = ssl.create_default_context(cafile=str(crt))
    data = b'{"custom_id": "x"}\n' * 300_000  # 5.7 MB
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    with httpx.Client(base_url=f"{url}/v1", headers=headers, verify=context, timeout=60) as http:
        made = http.post("/files", files={"file": ("big.jsonl", data)}, data={"purpose": "batch"})
        assert made.status_code == 200, made.text
        assert http.get(f"/files/{made.json()['id']}/content").content == data
        assert http.delete(f"/files/{made.json()['id']}").json()["deleted"] is True
        too_big = http.post("/chat/completions", content=b"x" * (5 * 1024 * 1024))
    assert too_big.status_code == 413  # everything else keeps the JSON limit
