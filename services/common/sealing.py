"""Sealing bytes kept at rest (in Redis) with the payload keys Temporal's payloads use:
AES-256-GCM under a fresh nonce, the key's id in front so that a rotated key still opens what
it sealed (payload_codec.py explains the keys)."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tiller.common.payload_codec import NONCE_BYTES, PayloadKeyError, PayloadKeys

_MAGIC = b"tlr1"  # what sealed bytes begin with: the format, should it ever change


class Sealer:
    def __init__(self, keys: PayloadKeys) -> None:
        self.keys = keys
        self._ciphers = {key_id: AESGCM(material) for key_id, material in keys.keys.items()}

    def seal(self, data: bytes, context: bytes = b"") -> bytes:
        """`data` sealed; `context` (e.g. the Redis key) must be given again to open it, so a
        sealed value copied under another key does not open."""
        key_id = self.keys.current.encode()
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.keys.current].encrypt(nonce, data, context)
        return _MAGIC + bytes([len(key_id)]) + key_id + nonce + sealed

    def open(self, blob: bytes, context: bytes = b"") -> bytes:
        """The bytes `seal` was given; PayloadKeyError if they do not open."""
        if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + 1:
            raise PayloadKeyError("not sealed by Tiller")
        at = len(_MAGIC) + 1
        key_id = blob[at : at + blob[len(_MAGIC)]].decode(errors="replace")
        at += blob[len(_MAGIC)]
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadKeyError(f"no payload key {key_id!r} to open this value")
        nonce, sealed = blob[at : at + NONCE_BYTES], blob[at + NONCE_BYTES :]
        try:
            return cipher.decrypt(nonce, sealed, context)
        except InvalidTag:
            raise PayloadKeyError(f"a value sealed with key {key_id!r} does not open") from None
