"""Waits between tries of something that should come back (quota, Redis, Temporal)."""

from __future__ import annotations

from collections.abc import Iterator

FIRST_SECONDS = 0.5
MOST_SECONDS = 10.0


def delays(first: float = FIRST_SECONDS, most: float = MOST_SECONDS) -> Iterator[float]:
    """0.5 s, then doubling up to 10 s, for ever."""
    wait = first
    while True:
        yield wait
        wait = min(wait * 2, most)
