"""Cancellations faster than Temporal's: the engine stops within moments of the client leaving.

Temporal tells a worker that its activity was cancelled in the response to the activity's next
heartbeat, up to a heartbeat interval later. The gateway also publishes the request id on a Redis
channel when its client leaves; every worker listens, and the one running that request stops the
engine request at once. Temporal's own cancellation still ends the activity.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tiller.common.redis_text import text
from tiller.contract.events import cancel_channel

log = logging.getLogger(__name__)
RETRY_SECONDS = 1.0


class CancelSignals:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis, self.channel = redis, cancel_channel(prefix)
        self._watched: dict[str, asyncio.Event] = {}
        # Attempts of one request running here together (a pipeline's fan-out steps): the
        # watch ends with the last of them.
        self._watchers: dict[str, int] = {}

    def watch(self, request_id: str) -> asyncio.Event:
        """An event set when the gateway says this request's client left."""
        self._watchers[request_id] = self._watchers.get(request_id, 0) + 1
        return self._watched.setdefault(request_id, asyncio.Event())

    def unwatch(self, request_id: str) -> None:
        left = self._watchers.get(request_id, 0) - 1
        if left > 0:
            self._watchers[request_id] = left
            return
        self._watchers.pop(request_id, None)
        self._watched.pop(request_id, None)

    async def listen(self) -> None:
        """Run until cancelled; a lost connection is reopened (Temporal's path still works)."""
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            event = self._watched.get(text(message["data"]))
                            if event is not None:
                                event.set()
            except RedisError as error:
                log.warning("cancel channel lost", extra={"error": type(error).__name__})
                await asyncio.sleep(RETRY_SECONDS)
