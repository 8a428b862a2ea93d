"""Values sealed for Redis (common/sealing.py) open only where they were sealed, with a key
listed; rotation keeps old values readable."""

from __future__ import annotations

import pytest

from tiller.common.payload_codec import PayloadKeyError, PayloadKeys, new_key_line
from tiller.common.sealing import Sealer

OLD, NEW = new_key_line("k1"), new_key_line("k2")
HERE, THERE = b"tiller:events:a", b"tiller:events:b"


def test_a_value_opens_where_it_was_sealed_and_shows_nothing_of_itself() -> None:
    sealer = Sealer(PayloadKeys.parse(OLD))
    sealed = sealer.seal(b"kim@example.com", HERE)
    assert b"kim" not in sealed and sealed != sealer.seal(b"kim@example.com", HERE)
    assert sealer.open(sealed, HERE) == b"kim@example.com"


def test_a_value_moved_altered_or_written_in_clear_does_not_open() -> None:
    sealer = Sealer(PayloadKeys.parse(OLD))
    sealed = sealer.seal(b"answer", HERE)
    with pytest.raises(PayloadKeyError, match="moved"):
        sealer.open(sealed, THERE)
    with pytest.raises(PayloadKeyError, match="altered"):
        sealer.open(sealed[:-1] + bytes([sealed[-1] ^ 1]), HERE)
    with pytest.raises(PayloadKeyError, match="not sealed"):
        sealer.open(b'{"kind": "delta", "text": "injected"}', HERE)


def test_each_place_has_a_key_of_its_own() -> None:
    """A key derived per place: the same payload key never seals two places' values alike."""
    sealer = Sealer(PayloadKeys.parse(OLD))
    assert sealer._cipher("k1", HERE) is not sealer._cipher("k1", THERE)
    assert sealer._cipher("k1", HERE) is sealer._cipher("k1", HERE)  # derived once


def test_keys_rotate_as_payload_keys_do() -> None:
    before = Sealer(PayloadKeys.parse(OLD)).seal(b"v", b"k")
    rotated = Sealer(PayloadKeys.parse(f"{NEW},{OLD}"))
    assert rotated.open(before, b"k") == b"v"  # the old key still opens
    after = rotated.seal(b"v", b"k")
    with pytest.raises(PayloadKeyError, match="no payload key 'k2'"):
        Sealer(PayloadKeys.parse(OLD)).open(after, b"k")  # sealed with the new one
