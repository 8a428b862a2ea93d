"""Connecting to Temporal, patiently (in compose the server may come up after us), over TLS and
with an API key where the cluster asks for them (TemporalAccess)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import temporalio.converter
from temporalio.client import Client
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.service import RPCError, TLSConfig

from tiller.common import tracing
from tiller.common.lifecycle import StartupError
from tiller.common.payload_codec import AesGcmCodec, OffloadStore, PayloadKeyError, PayloadKeys
from tiller.common.settings import shared

log = logging.getLogger(__name__)


def sealed_converter(
    keys: PayloadKeys, offload: OffloadStore | None = None
) -> temporalio.converter.DataConverter:
    """Temporal's default converter, with every payload sealed by `keys` (and, with an
    `offload` store, those too large for Temporal's history kept there), failures included:
    a failure's message and stack trace (an engine's error may quote the prompt) move into an
    encoded attribute, which the codec seals like any payload; Temporal keeps "Encoded failure"
    and the error's type."""
    return dataclasses.replace(
        temporalio.converter.DataConverter.default,
        payload_codec=AesGcmCodec(keys, offload),
        failure_converter_class=temporalio.converter.DefaultFailureConverterWithEncodedAttributes,
    )


def payload_keys(inline: str | None, path: str | None) -> PayloadKeys:
    """The service's payload keys; a service that talks to Temporal does not start without."""
    try:
        keys = PayloadKeys.load(inline, path)
    except PayloadKeyError as error:
        raise StartupError(f"payload keys: {error}") from None
    if keys is None:
        raise StartupError(
            "set TILLER_PAYLOAD_KEYS or TILLER_PAYLOAD_KEYS_FILE: Temporal payloads are "
            "encrypted and there is no key (tiller up makes one)"
        )
    return keys


@dataclass(frozen=True)
class TemporalAccessSettings:
    """The settings of a service that talks to Temporal (a base of its settings object)."""

    temporal_tls: bool = shared("TILLER_TEMPORAL_TLS", False)
    temporal_tls_ca_file: str | None = shared("TILLER_TEMPORAL_TLS_CA_FILE", None)
    temporal_tls_cert_file: str | None = shared("TILLER_TEMPORAL_TLS_CERT_FILE", None)
    temporal_tls_key_file: str | None = shared("TILLER_TEMPORAL_TLS_KEY_FILE", None)
    temporal_tls_server_name: str | None = shared("TILLER_TEMPORAL_TLS_SERVER_NAME", None)
    temporal_api_key: str | None = shared("TILLER_TEMPORAL_API_KEY", None)
    temporal_api_key_file: str | None = shared("TILLER_TEMPORAL_API_KEY_FILE", None)


@dataclass(frozen=True)
class TemporalAccess:
    """TLS to the frontend (with the cluster's own CA, and a client certificate where the
    cluster or Temporal Cloud checks one) and an API key (Temporal Cloud, sent as a bearer
    token). Plaintext and no key, the dev server's way, unless the settings say so."""

    tls: TLSConfig | None = None
    api_key: str | None = None

    @classmethod
    def of(cls, settings: TemporalAccessSettings) -> TemporalAccess:
        """From a service's settings (TILLER_TEMPORAL_TLS*, TILLER_TEMPORAL_API_KEY*);
        StartupError naming the setting that cannot be used."""
        s = settings
        if bool(s.temporal_tls_cert_file) != bool(s.temporal_tls_key_file):
            raise StartupError(
                "set TILLER_TEMPORAL_TLS_CERT_FILE and TILLER_TEMPORAL_TLS_KEY_FILE together"
            )
        if s.temporal_api_key and s.temporal_api_key_file:
            raise StartupError("set TILLER_TEMPORAL_API_KEY or TILLER_TEMPORAL_API_KEY_FILE")
        api_key = s.temporal_api_key
        if s.temporal_api_key_file:
            read = _read(s.temporal_api_key_file, "TILLER_TEMPORAL_API_KEY_FILE") or b""
            api_key = read.decode().strip()
        files = (s.temporal_tls_ca_file, s.temporal_tls_cert_file, s.temporal_tls_server_name)
        if not (s.temporal_tls or api_key or any(files)):
            return cls()
        tls = TLSConfig(
            server_root_ca_cert=_read(s.temporal_tls_ca_file, "TILLER_TEMPORAL_TLS_CA_FILE"),
            client_cert=_read(s.temporal_tls_cert_file, "TILLER_TEMPORAL_TLS_CERT_FILE"),
            client_private_key=_read(s.temporal_tls_key_file, "TILLER_TEMPORAL_TLS_KEY_FILE"),
            domain=s.temporal_tls_server_name,
        )
        return cls(tls, api_key)

    def options(self) -> dict[str, Any]:
        """What Client.connect takes for these."""
        return {"tls": self.tls or False, "api_key": self.api_key}


def _read(path: str | None, setting: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise StartupError(f"{setting}: cannot read {path}: {error.strerror}") from None


async def connect(
    address: str,
    namespace: str,
    wait_seconds: float,
    keys: PayloadKeys,
    runtime: Runtime | None = None,
    offload: OffloadStore | None = None,
    access: TemporalAccess | None = None,
) -> Client:
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return await Client.connect(
                address,
                namespace=namespace,
                data_converter=sealed_converter(keys, offload),
                runtime=runtime or logging_runtime(),
                interceptors=tracing.temporal_interceptors(),
                **(access or TemporalAccess()).options(),
            )
        except (RuntimeError, RPCError) as error:
            if time.monotonic() > deadline:
                raise StartupError(
                    f"cannot reach Temporal at {address} (namespace {namespace!r}): {error}"
                ) from None
            log.info("waiting for Temporal", extra={"address": address})
            await asyncio.sleep(0.5)


def metrics_runtime(host: str, port: int) -> Runtime:
    """A Temporal runtime that serves the SDK's own metrics (worker polls, task slots, activity
    latencies) for Prometheus on host:port (none for port 0), its logs forwarded as ours."""
    if not port:
        return logging_runtime()
    try:
        return logging_runtime(PrometheusConfig(bind_address=f"{host}:{port}"))
    except Exception as error:  # the core SDK reports a taken port as a plain exception
        raise StartupError(f"cannot serve Temporal SDK metrics on {host}:{port}: {error}") from None


_RUNTIME: Runtime | None = None


def logging_runtime(metrics: PrometheusConfig | None = None) -> Runtime:
    """A Temporal runtime whose core (Rust) logs go through Python's logging, so they are JSON
    lines like every other (by default the core prints plain text to stderr). One per process
    without metrics: the SDK's runtimes each own threads."""
    global _RUNTIME  # the process's one runtime, made on first use
    forwarded = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )
    if metrics is not None:
        return Runtime(telemetry=TelemetryConfig(logging=forwarded, metrics=metrics))
    if _RUNTIME is None:
        _RUNTIME = Runtime(telemetry=TelemetryConfig(logging=forwarded))
    return _RUNTIME
