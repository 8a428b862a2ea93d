"""A request's attempts running together on one worker (a pipeline's fan-out steps) share one
cancel watch, which lasts until the last of them ends."""

from __future__ import annotations

from typing import Any

from tiller.worker.cancels import CancelSignals


def test_the_watch_lasts_until_the_last_attempt_of_a_request_ends() -> None:
    redis: Any = None  # watching needs no connection; listen() does
    cancels = CancelSignals(redis, "tiller:")
    first, second = cancels.watch("chatcmpl-1"), cancels.watch("chatcmpl-1")
    assert first is second
    cancels.unwatch("chatcmpl-1")  # one step done; the other still runs
    assert cancels.watch("chatcmpl-1") is first
    cancels.unwatch("chatcmpl-1")
    cancels.unwatch("chatcmpl-1")
    assert cancels.watch("chatcmpl-1") is not first  # all ended: a later attempt starts anew
