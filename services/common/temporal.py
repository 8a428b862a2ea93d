"""Connecting to Temporal, patiently: in compose the server may come up after us."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

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
from temporalio.service import RPCError

from tiller.common import tracing
from tiller.common.lifecycle import StartupError
from tiller.common.payload_codec import AesGcmCodec, OffloadStore, PayloadKeyError, PayloadKeys

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


async def connect(
    address: str,
    namespace: str,
    wait_seconds: float,
    keys: PayloadKeys,
    runtime: Runtime | None = None,
    offload: OffloadStore | None = None,
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
