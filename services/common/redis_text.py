"""Redis replies as text: redis-py returns bytes (or str when decoding is on)."""

from __future__ import annotations


def text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value
