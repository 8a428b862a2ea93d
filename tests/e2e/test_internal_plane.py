"""The internal plane under `tiller up`: a raw gRPC call to quota's key-creation method from the
same host is refused without the deployment's credentials, whatever else it brings (no TLS; TLS
with no certificate; a certificate of another authority; another service's certificate; the
gateway's certificate without an admin caller), and goes through only as the gateway, for an
admin."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.support import Stack, internal_tls
from tiller.cli import certs
from tiller.common.internal_tls import InternalTls
from tiller.protos.quota.v1 import quota_pb2, quota_pb2_grpc

MINT = quota_pb2.CreateKeyRequest(spec=quota_pb2.KeySpec(name="minted", role="admin"))


def tls_channel(stack: Stack, credentials: grpc.ChannelCredentials) -> grpc.Channel:
    return grpc.secure_channel(
        f"127.0.0.1:{stack.quota_port}",
        credentials,
        options=[("grpc.ssl_target_name_override", "quota")],
    )


def refused(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.RpcError:
    with channel, pytest.raises(grpc.RpcError) as caught:
        quota_pb2_grpc.QuotaStub(channel).CreateKey(MINT, timeout=5, metadata=metadata)
    print(f"\n  -> {caught.value.code().name}: {caught.value.details()}")
    return caught.value


def test_plaintext_without_credentials_is_refused(stack: Stack) -> None:
    error = refused(grpc.insecure_channel(f"127.0.0.1:{stack.quota_port}"))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_without_a_certificate_is_refused(stack: Stack) -> None:
    trusting = grpc.ssl_channel_credentials(root_certificates=internal_tls("gateway").ca)
    error = refused(tls_channel(stack, trusting))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_of_another_authority_is_refused(stack: Stack, tmp_path: Path) -> None:
    certs.make(tmp_path, None)  # the same names, another authority
    stranger = InternalTls.load(str(tmp_path), "gateway")
    own_ca = internal_tls("gateway").ca  # it trusts quota, quota does not trust it
    credentials = grpc.ssl_channel_credentials(own_ca, stranger.key, stranger.cert)
    error = refused(tls_channel(stack, credentials))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_another_services_certificate_is_refused(stack: Stack) -> None:
    worker = internal_tls("worker").channel_credentials()
    admin = (("x-tiller-actor-key", stack.admin_key),)
    error = refused(tls_channel(stack, worker), admin)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_gateways_certificate_without_an_admin_caller_is_refused(stack: Stack) -> None:
    gateway = internal_tls("gateway").channel_credentials()
    error = refused(tls_channel(stack, gateway))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_gateway_for_an_admin_may(stack: Stack) -> None:
    gateway = internal_tls("gateway").channel_credentials()
    with tls_channel(stack, gateway) as channel:
        created = quota_pb2_grpc.QuotaStub(channel).CreateKey(
            quota_pb2.CreateKeyRequest(spec=quota_pb2.KeySpec(name="through-the-gateway")),
            timeout=5,
            metadata=(("x-tiller-actor-key", stack.admin_key),),
        )
    assert created.api_key.startswith("tk-")
