"""An API key's public id: what the gateway labels metrics and traces with and quota keys its
records by. It is derived from the key, so the gateway can name a key it has not yet asked quota
about; only the key's hash is ever stored."""

from __future__ import annotations

import hashlib


def digest(api_key: str) -> str:
    """The key's SHA-256, as quota stores it."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def key_id_of(api_key: str) -> str:
    return digest(api_key)[:16]
