"""Naming a field inside nested data the way users write it: `messages[0].content`."""

from __future__ import annotations

from collections.abc import Iterable


def key_path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
