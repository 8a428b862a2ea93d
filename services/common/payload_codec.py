"""Encryption of everything Tiller hands Temporal: each payload (a request's messages, its
result) is sealed with AES-256-GCM before it leaves the process, so Temporal's history and UI
hold only ciphertext.

Keys are named: a sealed payload carries its key's id (metadata `encryption-key-id`), so keys
rotate without breaking history. The first key is the one that seals; every key listed opens.
Rotate by putting a new key first and keeping the old ones until the requests they sealed are
gone from history. Key material comes from `TILLER_PAYLOAD_KEYS` (`id:base64-key[,id:key…]`,
32-byte keys) or a file of the same text (`TILLER_PAYLOAD_KEYS_FILE`, one key per line).
"""

from __future__ import annotations

import base64
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted"
OFFLOADED = b"binary/encrypted-offloaded"  # sealed, and kept outside Temporal (see AesGcmCodec)
REF = "tiller-payload-ref"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
TAG_BYTES = 16  # AES-GCM's authentication tag, after the ciphertext
_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class PayloadKeyError(ValueError):
    """The payload keys cannot be used; the message says why (never a key)."""


@dataclass(frozen=True)
class PayloadKeys:
    current: str  # the id of the key that seals
    keys: dict[str, bytes]

    @classmethod
    def parse(cls, text: str) -> PayloadKeys:
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for entry in re.split(r"[,\n]", text):
            entry = entry.strip()
            if not entry or entry.startswith("#"):
                continue
            key_id, sep, encoded = entry.partition(":")
            if not sep or not _ID.match(key_id):
                raise PayloadKeyError(
                    "each payload key is id:base64-key, with an id of [A-Za-z0-9._-]"
                )
            try:
                material = base64.b64decode(encoded.strip(), validate=True)
            except ValueError:
                raise PayloadKeyError(f"payload key {key_id!r} is not base64") from None
            if len(material) != 32:
                raise PayloadKeyError(f"payload key {key_id!r} must be 32 bytes (AES-256)")
            if key_id in keys:
                raise PayloadKeyError(f"payload key id {key_id!r} is listed twice")
            keys[key_id] = material
            order.append(key_id)
        if not order:
            raise PayloadKeyError("no payload key given")
        return cls(order[0], keys)

    @classmethod
    def load(cls, inline: str | None, path: str | None) -> PayloadKeys | None:
        """The keys from the setting or the file (not both); None when neither is set."""
        if inline and path:
            raise PayloadKeyError("set TILLER_PAYLOAD_KEYS or TILLER_PAYLOAD_KEYS_FILE, not both")
        if path:
            try:
                return cls.parse(Path(path).read_text())
            except OSError as error:
                raise PayloadKeyError(f"cannot read {path}: {error.strerror}") from None
        return cls.parse(inline) if inline else None


def new_key_line(key_id: str) -> str:
    """A fresh key, as one line of a keys file."""
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(32)).decode()}"


class AesGcmCodec(PayloadCodec):
    """Seals every payload; with a `store`, one too large for Temporal's history (whose server
    refuses a payload over 2 MB, and a whole request over 4 MB) is kept there instead, sealed,
    and the history holds a reference to it (the claim-check pattern)."""

    def __init__(self, keys: PayloadKeys, store: OffloadStore | None = None) -> None:
        self.keys = keys
        self.store = store
        self._ciphers = {key_id: AESGCM(material) for key_id, material in keys.keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        cipher = self._ciphers[self.keys.current]
        sealed = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            data = nonce + cipher.encrypt(nonce, payload.SerializeToString(), None)
            metadata = {"encoding": ENCODING, KEY_ID: self.keys.current.encode()}
            if self.store is not None and len(data) > self.store.threshold_bytes:
                metadata = {**metadata, "encoding": OFFLOADED, REF: await self.store.put(data)}
                data = b""
            sealed.append(Payload(metadata=metadata, data=data))
        return sealed

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        opened = []
        for payload in payloads:
            encoding = payload.metadata.get("encoding")
            if encoding not in (ENCODING, OFFLOADED):
                opened.append(payload)  # not sealed by us (written before encryption was on)
                continue
            key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
            cipher = self._ciphers.get(key_id)
            if cipher is None:
                raise PayloadKeyError(f"no payload key {key_id!r} to open this payload")
            data = payload.data
            if encoding == OFFLOADED:
                data = await self._fetch(payload.metadata.get(REF, b""))
            if len(data) < NONCE_BYTES + TAG_BYTES:
                raise PayloadKeyError("this payload is too short to be a sealed one")
            nonce, sealed = data[:NONCE_BYTES], data[NONCE_BYTES:]
            try:
                opened.append(Payload.FromString(cipher.decrypt(nonce, sealed, None)))
            except (InvalidTag, DecodeError):
                raise PayloadKeyError(f"payload sealed with key {key_id!r} does not open") from None
        return opened

    async def _fetch(self, ref: bytes) -> bytes:
        if self.store is None:
            raise PayloadKeyError(
                "this payload is kept outside Temporal, and this client has no store"
            )
        data = await self.store.get(ref)
        if data is None:
            raise PayloadKeyError("this payload was kept outside Temporal and has expired")
        return data


class OffloadStore(Protocol):
    """Where payloads too large for Temporal's history are kept (common/offload.py)."""

    threshold_bytes: int

    async def put(self, data: bytes) -> bytes:
        """Keep `data`; the reference to it."""

    async def get(self, ref: bytes) -> bytes | None:
        """What `put` kept, or None if it is gone."""
