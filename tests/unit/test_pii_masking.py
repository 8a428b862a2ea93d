"""Policies, placeholders and restoring them, whole and streamed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tiller.common.pii.policy import Policies, Policy
from tiller.common.pii.redaction import Blocked, Redaction
from tiller.common.pii.restoring import Restorer
from tiller.common.pii.scanner import Scanner
from tiller.contract.events import Delta, Done, Event
from tiller.contract.results import InferenceResult, Usage
from tiller.gateway.restoring import AnswerRestorer

SCANNER = Scanner()
TEXT = "I am kim@example.com, call 010-1234-5678 or write kim@example.com."


def test_the_stricter_policy_applies_per_type() -> None:
    policies = Policies((Policy("mask+restore"), Policy("block", frozenset({"CARD"}))))
    assert policies.mode_for("EMAIL") == "mask+restore"
    assert policies.mode_for("CARD") == "block"
    assert Policies((Policy("off"), Policy("mask"))).mode_for("IP") == "mask"
    assert not Policies((Policy("off"),)).active


def test_the_same_value_gets_the_same_placeholder() -> None:
    redaction = Redaction(SCANNER, Policies((Policy("mask"),)))
    assert redaction.mask(TEXT) == "I am <EMAIL_1>, call <PHONE_1> or write <EMAIL_1>."
    assert redaction.counts == {"EMAIL": 2, "PHONE": 1}
    assert redaction.vault == {}  # mask: nothing to restore


def test_placeholders_the_caller_wrote_are_not_reused() -> None:
    redaction = Redaction(SCANNER, Policies((Policy("mask+restore"),)))
    redaction.check(["literally <EMAIL_1>", TEXT])
    assert redaction.mask(TEXT).startswith("I am <EMAIL_2>,")
    assert redaction.vault["<EMAIL_2>"] == "kim@example.com"
    assert "<EMAIL_1>" not in redaction.vault


def test_block_names_the_types_never_the_values() -> None:
    redaction = Redaction(
        SCANNER, Policies((Policy("mask"), Policy("block", frozenset({"PHONE"}))))
    )
    with pytest.raises(Blocked) as blocked:
        redaction.check([TEXT])
    assert blocked.value.types == ["PHONE"]
    assert "010" not in str(blocked.value)


def test_only_mask_restore_types_are_restored() -> None:
    redaction = Redaction(
        SCANNER, Policies((Policy("mask+restore"), Policy("mask", frozenset({"PHONE"}))))
    )
    masked = redaction.mask(TEXT)
    assert Restorer(redaction.vault).whole(masked) == (
        "I am kim@example.com, call <PHONE_1> or write kim@example.com."
    )


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_a_placeholder_split_across_chunks_is_restored_once(size: int) -> None:
    vault = {"<EMAIL_1>": "kim@example.com", "<KR_RRN_12>": "900101-1234567"}
    answer = "Mail <EMAIL_1> about <KR_RRN_12>, not <EMAIL_9> or a < b <EMAIL_"
    restorer = Restorer(vault)
    out = "".join(restorer.feed(answer[i : i + size]) for i in range(0, len(answer), size))
    out += restorer.flush()
    assert out == ("Mail kim@example.com about 900101-1234567, not <EMAIL_9> or a < b <EMAIL_")


def test_values_in_json_arguments_are_escaped() -> None:
    restorer = Restorer({"<NAME_1>": 'He said "hi"\\'}, json_string=True)
    arguments = restorer.whole('{"who": "<NAME_1>"}')
    assert json.loads(arguments) == {"who": 'He said "hi"\\'}


def _delta(id_: str, text: str, chunks: list[list[dict[str, Any]]] | None = None) -> Event:
    return Delta(text, 1, tuple(chunks or ()), id_)


def test_streamed_text_and_the_result_are_restored() -> None:
    restorer = AnswerRestorer({"<EMAIL_1>": "kim@example.com"})
    batch = [
        _delta("1-0", "Write to <EMA"),
        _delta("2-0", "IL_1"),
        _delta("3-0", ">."),
        Done(InferenceResult("Write to <EMAIL_1>.", "stop", Usage()), "4-0"),
    ]
    out = list(restorer.restore(batch))
    deltas = [e for e in out if isinstance(e, Delta)]
    assert [e.text for e in deltas] == ["Write to ", "kim@example.com."]  # nothing held alone
    assert [e.tokens for e in deltas] == [1, 2]  # the held piece's token is not lost
    assert isinstance(out[-1], Done) and out[-1].result.text == "Write to kim@example.com."
    assert batch[0] == Delta("Write to <EMA", 1, (), "1-0")  # shared events are not changed


def test_tool_call_arguments_streamed_in_pieces_are_restored() -> None:
    restorer = AnswerRestorer({"<PHONE_1>": "010-1234-5678"})
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "dial"}}
    pieces = ['{"number": "<PHO', 'NE_1>"', "}"]
    chunks = [[{"index": 0, "delta": {"tool_calls": [{**call, "function": {"arguments": ""}}]}}]]
    chunks += [
        [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": p}}]}}]
        for p in pieces
    ]
    chunks.append([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])
    out = list(restorer.restore([_delta("1-0", "", chunks)]))
    arguments = "".join(
        c["function"].get("arguments", "")
        for chunk in out[0].chunks  # type: ignore[union-attr]
        for choice in chunk
        for c in choice["delta"].get("tool_calls", [])
    )
    assert json.loads(arguments) == {"number": "010-1234-5678"}


def test_block_applies_to_a_type_merged_into_another() -> None:
    from tiller.common.pii.recognizers import RecognizerSpec

    scanner = Scanner([RecognizerSpec(type="EMPLOYEE_ID", pattern=r"\d{6}", context=("사번",))])
    redaction = Redaction(
        scanner, Policies((Policy("mask"), Policy("block", frozenset({"EMAIL"}))))
    )
    with pytest.raises(Blocked) as blocked:
        redaction.check(["사번 123456, 메일 hong123456@corp.co.kr"])
    assert blocked.value.types == ["EMAIL"]
