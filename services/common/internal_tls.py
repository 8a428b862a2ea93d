"""The trusted internal plane: every call between Tiller's services is mutual TLS, and each
service knows which services may call which of its methods.

Each service has a certificate of the deployment's own certificate authority, named for it
(`CN` and DNS name `gateway`, `router`, `quota`, `worker`), made by `tiller certs`
(cli/certs.py; `tiller up` makes them once). A server accepts only connections that present a
certificate of that authority, and then only from the services its policy names
(grpc_server.Authorize); a client checks that the server is the service it meant to reach
(its certificate names it), whatever address it dialled. Why mTLS and not signed tokens:
docs/security.md.

Where the files are: `TILLER_INTERNAL_TLS_DIR`, a directory holding `ca.crt` and the service's
own `<name>.crt` and `<name>.key` (a Kubernetes Secret per service gives each pod only its own).
The plaintext plane (`TILLER_INTERNAL_INSECURE=true`) is the operator's explicit choice; with
neither set a service does not start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from tiller.common.lifecycle import StartupError
from tiller.common.settings import shared

GATEWAY, ROUTER, QUOTA, WORKER = "gateway", "router", "quota", "worker"
SERVICES = (GATEWAY, ROUTER, QUOTA, WORKER)
CA_FILE = "ca.crt"


@dataclass(frozen=True)
class InternalPlaneSettings:
    """The settings every service of the internal plane has (a base of its settings object):
    this deployment's certificates, or the operator's explicit choice of plaintext."""

    internal_tls_dir: str | None = shared("TILLER_INTERNAL_TLS_DIR", None)
    internal_insecure: bool = shared("TILLER_INTERNAL_INSECURE", False)

    def internal_tls(self, identity: str) -> InternalTls | None:
        return internal_plane(self.internal_tls_dir, self.internal_insecure, identity)


@dataclass(frozen=True)
class InternalTls:
    """One service's certificate and key, and the authority every peer's must come from."""

    identity: str
    ca: bytes
    cert: bytes
    key: bytes

    @classmethod
    def load(cls, directory: str, identity: str) -> InternalTls:
        """The files of `identity` in `directory`; StartupError naming what is missing."""
        base = Path(directory)
        files = {name: base / name for name in (CA_FILE, f"{identity}.crt", f"{identity}.key")}
        missing = [name for name, path in files.items() if not path.is_file()]
        if missing:
            raise StartupError(
                f"internal TLS: {', '.join(missing)} not found in {directory} "
                f"(tiller certs {directory} makes them)"
            )
        try:
            ca, cert, key = (path.read_bytes() for path in files.values())
        except OSError as error:
            raise StartupError(f"internal TLS: cannot read {directory}: {error.strerror}") from None
        named = certificate_identity(cert)
        if named != identity:
            raise StartupError(
                f"internal TLS: {identity}.crt is {named!r}'s certificate, not {identity!r}'s"
            )
        return cls(identity, ca, cert, key)

    def server_credentials(self) -> grpc.ServerCredentials:
        """Only peers with a certificate of this deployment's authority may connect."""
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def internal_plane(directory: str | None, insecure: bool, identity: str) -> InternalTls | None:
    """The service's TLS; None where the operator chose the plaintext plane; StartupError
    when neither is set (fail closed)."""
    if directory and insecure:
        raise StartupError("set TILLER_INTERNAL_TLS_DIR or TILLER_INTERNAL_INSECURE, not both")
    if directory:
        return InternalTls.load(directory, identity)
    if insecure:
        return None
    raise StartupError(
        "set TILLER_INTERNAL_TLS_DIR to this deployment's internal certificates (tiller certs "
        "DIR makes them; tiller up does it for you), or TILLER_INTERNAL_INSECURE=true to run "
        "the internal plane in plaintext, unauthenticated (docs/security.md says what that risks)"
    )


def certificate_identity(pem: bytes) -> str:
    """The service a certificate names (its common name)."""
    try:
        names = x509.load_pem_x509_certificate(pem).subject.get_attributes_for_oid(
            NameOID.COMMON_NAME
        )
    except ValueError:
        raise StartupError("internal TLS: a certificate is not PEM") from None
    return str(names[0].value) if names else ""


def peer_identity(context: grpc.aio.ServicerContext) -> str | None:
    """The service on the other end of a call: its certificate's name, checked by TLS against
    the deployment's authority; None on a connection without one."""
    names = (context.auth_context() or {}).get("x509_common_name") or []
    return names[0].decode() if names else None
