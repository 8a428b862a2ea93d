"""`tiller certs DIR`: the internal plane's certificates (common/internal_tls.py).

    tiller certs .tiller-secrets/internal-tls --ca-key .tiller-secrets/internal-ca.key
    tiller certs ./internal-tls          # a fresh authority, its key thrown away

Makes a certificate authority of this deployment's own and, signed by it, a certificate and key
for each service (gateway, router, quota, worker): ECDSA P-256, the service's name as common
name and DNS name, good for both ends of a TLS connection, for `--days` (365). With `--ca-key`
the authority's key is kept there (0600) and a later run issues only what is missing or expires
within 30 days, so the running services keep trusting each other; without it, the authority's
key exists only while the command runs, and a new set means a new authority.

Keys are written 0600 for the user that runs the services. `--key-mode 644` writes them
readable by every user (compose: the certificates sit on a volume only Docker's root reaches,
and the services run under the image's own user).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tiller.common.internal_tls import CA_FILE, SERVICES

RENEW_WITHIN = datetime.timedelta(days=30)
_PEM = serialization.Encoding.PEM


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = commands.add_parser(
        "certs", help="make the internal plane's certificates (mutual TLS between services)"
    )
    certs.add_argument("directory", help="where ca.crt and each service's .crt and .key go")
    certs.add_argument("--ca-key", help="keep the authority's key here, and reuse it if there")
    certs.add_argument("--days", type=int, default=365, help="how long certificates are good")
    certs.add_argument("--key-mode", default="600", help="the keys' file mode, octal (default 600)")


def run(args: argparse.Namespace) -> int:
    try:
        mode = int(args.key_mode, 8)
    except ValueError:
        print(
            f"tiller certs: --key-mode is octal, like 600 (got {args.key_mode!r})", file=sys.stderr
        )
        return 2
    if not 1 <= args.days <= 3650:
        print("tiller certs: --days is 1 to 3650", file=sys.stderr)
        return 2
    ca_key = Path(args.ca_key) if args.ca_key else None
    try:
        issued = make(Path(args.directory), ca_key, args.days, mode)
    except OSError as error:
        print(f"tiller certs: {error.filename}: {error.strerror}", file=sys.stderr)
        return 1
    print(f"{args.directory}: " + (", ".join(issued) + " issued" if issued else "up to date"))
    return 0


def make(
    directory: Path,
    ca_key_path: Path | None,
    days: int = 365,
    key_mode: int = 0o600,
    names: tuple[str, ...] = SERVICES,
) -> list[str]:
    """Issue what is missing or due (a certificate for each of `names`); the names of the
    files written."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_file = directory / CA_FILE
    authority = _load_authority(ca_file, ca_key_path)
    issued: list[str] = []
    if authority is None:
        authority = _new_authority(now, days)
        _write(ca_file, authority[1].public_bytes(_PEM), 0o644)
        issued.append(CA_FILE)
        if ca_key_path is not None:
            _write(ca_key_path, _private(authority[0]), 0o600)
    key, ca = authority
    for name in names:
        cert_file = directory / f"{name}.crt"
        if CA_FILE not in issued and not _due(cert_file, ca, now):
            continue
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        cert = _leaf(name, leaf_key, key, ca, now, days)
        _write(directory / f"{name}.key", _private(leaf_key), key_mode)
        _write(cert_file, cert.public_bytes(_PEM), 0o644)
        issued.append(name)
    return issued


def _load_authority(
    ca_file: Path, key_path: Path | None
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    if key_path is None or not key_path.is_file() or not ca_file.is_file():
        return None
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != ca.public_key():
        return None  # not this authority's key: start over
    if ca.not_valid_after_utc - datetime.datetime.now(datetime.UTC) < RENEW_WITHIN:
        return None
    return key, ca


def _new_authority(
    now: datetime.datetime, days: int
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tiller internal CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days + 30))  # outlives what it signs
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    now: datetime.datetime,
    days: int,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + datetime.timedelta(days=days), ca.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _usage(sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not sign,
        key_cert_sign=sign,
        crl_sign=sign,
        encipher_only=False,
        decipher_only=False,
    )


def _due(cert_file: Path, ca: x509.Certificate, now: datetime.datetime) -> bool:
    """Missing, signed by another authority, or expiring within RENEW_WITHIN."""
    key_file = cert_file.with_suffix(".key")
    if not cert_file.is_file() or not key_file.is_file():
        return True
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return (
        cert.issuer != ca.subject
        or cert.not_valid_after_utc - now < RENEW_WITHIN
        or (_authority_key_id(cert) != _subject_key_id(ca))
    )


def _authority_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    return ext.value.key_identifier


def _subject_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def _private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _write(path: Path, data: bytes, mode: int) -> None:
    """Written whole under a temporary name, with its mode from the start, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
    os.chmod(temporary, mode)  # whatever the umask said
    os.replace(temporary, path)
