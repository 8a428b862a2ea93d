"""The admission script's reply is read by name: each field lands in its own, typed."""

from __future__ import annotations

from tiller.quota.admit_script import AdmitReply


def test_an_admission_is_read_by_name_in_any_order() -> None:
    raw = [b"team", b"", b"outcome", b"admitted", b"key_id", b"abc", b"requests_limit", 60]
    raw += [b"requests_remaining", 59, b"tokens_reset_ms", 1500, b"models", b'["llama-*"]']
    reply = AdmitReply.decode(raw)
    assert reply == AdmitReply(
        outcome="admitted",
        key_id="abc",
        requests_limit=60,
        requests_remaining=59,
        tokens_reset_ms=1500,
        models='["llama-*"]',
    )


def test_a_refusal_names_its_scope_limit_and_wait() -> None:
    raw = [b"outcome", b"over", b"scope", b"t:ml", b"what", b"requests", b"limit", 5]
    raw += [b"wait_ms", 250, b"from_a_newer_script", b"ignored"]
    reply = AdmitReply.decode(raw)
    assert (reply.outcome, reply.scope, reply.what, reply.limit, reply.wait_ms) == (
        "over", "t:ml", "requests", 5, 250,
    )  # fmt: skip
