"""Running one Lua script many times in one Redis round trip."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError


class BatchScript:
    """EVALSHA for each call in one pipeline. A pipeline given redis-py's Script object would
    ask SCRIPT EXISTS first on every batch (an extra round trip); instead the script is loaded
    only when Redis answers that it does not know it (a restart, SCRIPT FLUSH), and only the
    calls that got that answer run again."""

    def __init__(self, redis: Redis, source: str, keys: int) -> None:
        self.redis, self.source, self.keys = redis, source, keys
        self.sha = redis.register_script(source).sha

    async def run(self, calls: list[tuple[str, ...]], raise_errors: bool = True) -> list[Any]:
        """One reply per call (keys first, then args). A call's error is raised (the first),
        or with `raise_errors` false left in its place, so one bad call sinks no other."""
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            if attempt:
                await self.redis.script_load(self.source)
            async with self.redis.pipeline(transaction=False) as pipe:
                for i in todo:
                    pipe.evalsha(self.sha, self.keys, *calls[i])
                answers = await pipe.execute(raise_on_error=False) if todo else []
            for i, answer in zip(todo, answers, strict=True):
                replies[i] = answer
            todo = [i for i in todo if isinstance(replies[i], NoScriptError)]
            if not todo:
                break
        for reply in replies:
            if raise_errors and isinstance(reply, Exception):
                raise reply
        return replies
