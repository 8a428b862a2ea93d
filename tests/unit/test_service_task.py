"""A task that serves the whole process carries no request's id, though a request started it."""

from __future__ import annotations

import asyncio

from tiller.common import logs
from tiller.common.lifecycle import service_task


async def test_a_service_task_starts_without_the_request_context() -> None:
    async def seen() -> str | None:
        return logs.REQUEST_ID.get()

    logs.REQUEST_ID.set("chatcmpl-someone")
    assert await asyncio.get_running_loop().create_task(seen()) == "chatcmpl-someone"
    assert await service_task(seen()) is None
