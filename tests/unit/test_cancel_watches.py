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


def test_a_signal_heard_before_the_attempt_watches_stops_it_at_once() -> None:
    redis: Any = None
    cancels = CancelSignals(redis, "tiller:")
    cancels.heard("chatcmpl-early")  # the client left while the worker was taking the activity
    assert cancels.watch("chatcmpl-early").is_set()
    assert not cancels.watch("chatcmpl-other").is_set()
    watched = cancels.watch("chatcmpl-later")
    cancels.heard("chatcmpl-later")  # and the usual order still works
    assert watched.is_set()
