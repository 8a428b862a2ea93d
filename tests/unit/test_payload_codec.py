"""The payload codec: sealed with the current key, opened with any key listed, refused when the
key is missing or the ciphertext was altered, and the key text validated."""

from __future__ import annotations

import pytest
from temporalio.api.common.v1 import Payload

from tiller.common.payload_codec import (
    ENCODING,
    KEY_ID,
    AesGcmCodec,
    PayloadKeyError,
    PayloadKeys,
    new_key_line,
)

PLAIN = Payload(
    metadata={"encoding": b"json/plain"}, data=b'{"content": "my RRN is 900101-1234567"}'
)


async def test_a_payload_is_sealed_and_opened() -> None:
    codec = AesGcmCodec(PayloadKeys.parse(new_key_line("k1")))
    (sealed,) = await codec.encode([PLAIN])
    assert sealed.metadata["encoding"] == ENCODING and sealed.metadata[KEY_ID] == b"k1"
    assert b"900101" not in sealed.SerializeToString()
    assert await codec.decode([sealed]) == [PLAIN]
    (again,) = await codec.encode([PLAIN])
    assert again.data != sealed.data  # a fresh nonce every time


async def test_keys_rotate_without_losing_history() -> None:
    old, new = new_key_line("old"), new_key_line("new")
    (sealed_by_old,) = await AesGcmCodec(PayloadKeys.parse(old)).encode([PLAIN])
    rotated = AesGcmCodec(PayloadKeys.parse(f"{new},{old}"))
    assert await rotated.decode([sealed_by_old]) == [PLAIN]
    (sealed_by_new,) = await rotated.encode([PLAIN])
    assert sealed_by_new.metadata[KEY_ID] == b"new"
    with pytest.raises(PayloadKeyError, match="no payload key 'new'"):
        await AesGcmCodec(PayloadKeys.parse(old)).decode([sealed_by_new])


async def test_altered_ciphertext_does_not_open_and_plain_payloads_pass() -> None:
    codec = AesGcmCodec(PayloadKeys.parse(new_key_line("k1")))
    (sealed,) = await codec.encode([PLAIN])
    tampered = Payload(metadata=dict(sealed.metadata), data=sealed.data[:-1] + b"\0")
    with pytest.raises(PayloadKeyError, match="does not open"):
        await codec.decode([tampered])
    assert await codec.decode([PLAIN]) == [PLAIN]  # written before encryption was on


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no payload key"),
        ("k1", "id:base64-key"),
        ("k1:not base64!", "not base64"),
        ("k1:c2hvcnQ=", "32 bytes"),
        (f"{new_key_line('k1')},{new_key_line('k1')}", "listed twice"),
    ],
)
def test_bad_key_text_is_refused_without_quoting_a_key(text: str, problem: str) -> None:
    with pytest.raises(PayloadKeyError, match=problem) as caught:
        PayloadKeys.parse(text)
    assert "c2hvcnQ" not in str(caught.value)
