"""Connecting to Temporal, patiently: in compose the server may come up after us."""

from __future__ import annotations

import asyncio
import logging
import time

from temporalio.client import Client
from temporalio.service import RPCError

from tiller.common.lifecycle import StartupError

log = logging.getLogger(__name__)


async def connect(address: str, namespace: str, wait_seconds: float) -> Client:
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return await Client.connect(address, namespace=namespace)
        except (RuntimeError, RPCError) as error:
            if time.monotonic() > deadline:
                raise StartupError(
                    f"cannot reach Temporal at {address} (namespace {namespace!r}): {error}"
                ) from None
            log.info("waiting for Temporal", extra={"address": address})
            await asyncio.sleep(0.5)
