"""Sealing bytes kept at rest (in Redis: an answer's events, a background request's result, a
stored response) with the payload keys Temporal's payloads use: AES-256-GCM under a fresh
nonce, the key's id in front so that a rotated key still opens what it sealed (payload_codec.py
explains the keys). Redis, its append-only file and its snapshots then hold ciphertext only, and
a value written by anyone without a key does not open.

A value sealed for a place (`context`, e.g. its Redis key) is sealed under a key derived for
that place (HKDF-SHA256 of the payload key, the context as its info), and the context is also
the associated data: every answer stream has a key of its own, so random nonces stay far from
their limit however many entries are written under one payload key, and a value copied to
another key does not open there.

    sealed = b"tlr2" + len(key id) + key id + nonce (12) + ciphertext and tag
    (b"tlr1": the same under the payload key itself, as the first version wrote; still opened)
"""

from __future__ import annotations

import os
from collections import OrderedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tiller.common.payload_codec import NONCE_BYTES, PayloadKeyError, PayloadKeys

_DERIVED, _DIRECT = b"tlr2", b"tlr1"  # what sealed bytes begin with: the format
_INFO = b"tiller sealed value v2:"
_CACHED = 4096  # derived ciphers kept: one per stream a gateway or worker reads or writes


class Sealer:
    def __init__(self, keys: PayloadKeys) -> None:
        self.keys = keys
        self._direct = {key_id: AESGCM(material) for key_id, material in keys.keys.items()}
        self._derived: OrderedDict[tuple[str, bytes], AESGCM] = OrderedDict()

    def seal(self, data: bytes, context: bytes = b"") -> bytes:
        """`data` sealed; `context` (e.g. the Redis key) must be given again to open it, so a
        sealed value copied under another key does not open."""
        key_id = self.keys.current
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._cipher(key_id, context).encrypt(nonce, data, context)
        return _DERIVED + bytes([len(key_id)]) + key_id.encode() + nonce + sealed

    def open(self, blob: bytes, context: bytes = b"") -> bytes:
        """The bytes `seal` was given; PayloadKeyError (a ValueError, never the value) if they
        do not open: not sealed, altered, sealed for another place or by an unknown key."""
        magic = blob[: len(_DERIVED)]
        if magic not in (_DERIVED, _DIRECT) or len(blob) < len(magic) + 1:
            raise PayloadKeyError("not sealed by Tiller")
        at = len(magic) + 1
        key_id = blob[at : at + blob[len(magic)]].decode(errors="replace")
        at += blob[len(magic)]
        if key_id not in self.keys.keys:
            raise PayloadKeyError(f"no payload key {key_id!r} to open this value")
        cipher = self._cipher(key_id, context) if magic == _DERIVED else self._direct[key_id]
        nonce, sealed = blob[at : at + NONCE_BYTES], blob[at + NONCE_BYTES :]
        try:
            return cipher.decrypt(nonce, sealed, context)
        except InvalidTag:
            raise PayloadKeyError(
                f"a value sealed with key {key_id!r} does not open here (altered, or moved)"
            ) from None

    def _cipher(self, key_id: str, context: bytes) -> AESGCM:
        cipher = self._derived.get((key_id, context))
        if cipher is not None:
            self._derived.move_to_end((key_id, context))
            return cipher
        material = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO + context)
        cipher = self._derived[(key_id, context)] = AESGCM(material.derive(self.keys.keys[key_id]))
        if len(self._derived) > _CACHED:
            self._derived.popitem(last=False)
        return cipher
