"""What to do with the personal data a request carries, per type.

A policy is a mode, for every type or for the types it lists. A request is under two: its
model's (models.yaml) and its key's; per type, the stricter one applies, in this order:

- off: leave it;
- mask+restore: the engine sees a placeholder such as <EMAIL_1>; the client gets the
  original back wherever the answer repeats the placeholder;
- mask: the engine sees the placeholder, and so does the client;
- block: refuse the request (400 `pii_detected`, naming the types found, never the values).
"""

from __future__ import annotations

from dataclasses import dataclass

OFF, MASK_RESTORE, MASK, BLOCK = "off", "mask+restore", "mask", "block"
MODES = (OFF, MASK_RESTORE, MASK, BLOCK)  # from the mildest to the strictest
_RANK = {mode: rank for rank, mode in enumerate(MODES)}


@dataclass(frozen=True)
class Policy:
    mode: str = OFF
    types: frozenset[str] = frozenset()  # empty: every type

    def __post_init__(self) -> None:
        if self.mode not in _RANK:
            raise ValueError(f"unknown PII mode {self.mode!r} (known: {', '.join(MODES)})")

    def mode_for(self, type_: str) -> str:
        return self.mode if not self.types or type_ in self.types else OFF

    @classmethod
    def of(cls, mode: str, types: list[str] | tuple[str, ...] = ()) -> Policy:
        return cls(mode or OFF, frozenset(types))


@dataclass(frozen=True)
class Policies:
    """Several policies (the model's, the key's): the strictest mode per type."""

    each: tuple[Policy, ...]

    @property
    def active(self) -> bool:
        return any(p.mode != OFF for p in self.each)

    def mode_for(self, type_: str) -> str:
        return max((p.mode_for(type_) for p in self.each), key=_RANK.__getitem__, default=OFF)

    def watched(self, types: tuple[str, ...]) -> tuple[str, ...]:
        """Of `types`, those some policy acts on."""
        return tuple(t for t in types if self.mode_for(t) != OFF)
