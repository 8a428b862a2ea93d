"""Cancellations faster than Temporal's: the engine stops within moments of the client leaving.

Temporal tells a worker that its activity was cancelled in the response to the activity's next
heartbeat, up to a heartbeat interval later. The gateway also publishes the request id on a Redis
channel when its client leaves; every worker listens, and the one running that request stops the
engine request at once. Temporal's own cancellation still ends the activity.

A signal can arrive before the attempt it is for begins to watch (the worker just took the
activity, or is still starting the engine request): every worker remembers the ids it heard for
a minute, and an attempt that starts watching one of them stops at once, instead of running
until Temporal's cancellation comes with its first heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tiller.common.redis_text import text
from tiller.contract.events import cancel_channel

log = logging.getLogger(__name__)
RETRY_SECONDS = 1.0
REMEMBER_SECONDS = 60.0  # how long a signal heard before its attempt watched still counts
REMEMBER_MOST = 10_000


class CancelSignals:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis, self.channel = redis, cancel_channel(prefix)
        self._watched: dict[str, asyncio.Event] = {}
        # Attempts of one request running here together (a pipeline's fan-out steps): the
        # watch ends with the last of them.
        self._watchers: dict[str, int] = {}
        self._heard: OrderedDict[str, float] = OrderedDict()  # request id -> when, oldest first

    def watch(self, request_id: str) -> asyncio.Event:
        """An event set when the gateway says this request's client left."""
        self._watchers[request_id] = self._watchers.get(request_id, 0) + 1
        event = self._watched.setdefault(request_id, asyncio.Event())
        heard = self._heard.get(request_id)
        if heard is not None and time.monotonic() - heard < REMEMBER_SECONDS:
            event.set()  # its client left before this attempt began to watch
        return event

    def unwatch(self, request_id: str) -> None:
        left = self._watchers.get(request_id, 0) - 1
        if left > 0:
            self._watchers[request_id] = left
            return
        self._watchers.pop(request_id, None)
        self._watched.pop(request_id, None)

    def heard(self, request_id: str) -> None:
        """The gateway says this request's client left."""
        now = time.monotonic()
        self._heard[request_id] = now
        self._heard.move_to_end(request_id)
        while self._heard and (
            len(self._heard) > REMEMBER_MOST
            or now - next(iter(self._heard.values())) > REMEMBER_SECONDS
        ):
            self._heard.popitem(last=False)
        event = self._watched.get(request_id)
        if event is not None:
            event.set()

    async def listen(self) -> None:
        """Run until cancelled; a lost connection is reopened (Temporal's path still works)."""
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self.heard(text(message["data"]))
            except RedisError as error:
                log.warning("cancel channel lost", extra={"error": type(error).__name__})
                await asyncio.sleep(RETRY_SECONDS)
