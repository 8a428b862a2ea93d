"""A batch input file's validation (no network): every bad line named, with what is wrong."""

from __future__ import annotations

import orjson

from tiller.contract.results import InferenceResult, Usage
from tiller.gateway.batches.lines import error_line, output_line, parse_line, validate

CHAT = "/v1/chat/completions"


def chat_line(custom_id: str, text: str = "hi", **changes: object) -> bytes:
    item: dict[str, object] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": "demo", "messages": [{"role": "user", "content": text}]},
    }
    item.update(changes)
    return orjson.dumps(item)


def test_a_good_file_is_counted_and_blank_lines_are_skipped() -> None:
    data = b"\n".join([chat_line("a"), b"", chat_line("b"), b"   ", chat_line("c")]) + b"\n"
    checked = validate(data, CHAT)
    assert checked.total == 3 and checked.errors == [] and checked.error_lines == []


def test_every_bad_line_is_named_with_its_number_and_what_is_wrong() -> None:
    lines = [
        chat_line("ok"),
        b"{not json",
        chat_line("dup"),
        chat_line("dup"),
        chat_line("wrong-url", url="/v1/embeddings"),
        chat_line("get", method="GET"),
        orjson.dumps({"method": "POST", "url": CHAT, "body": {}}),
        chat_line("streams", body={"model": "demo", "messages": [], "stream": True}),
        chat_line("no-messages", body={"model": "demo"}),
        b"[1, 2]",
    ]
    checked = validate(b"\n".join(lines), CHAT)
    assert checked.total == 10
    by_line = {e["line"]: e for e in checked.errors}
    assert sorted(by_line) == [2, 4, 5, 6, 7, 8, 9, 10]
    assert by_line[2]["message"] == "Line 2 is not valid JSON."
    assert by_line[4]["code"] == "duplicate_custom_id" and "line 3" in by_line[4]["message"]
    assert by_line[5]["param"] == "url" and by_line[6]["param"] == "method"
    assert by_line[7]["param"] == "custom_id"
    assert by_line[8]["param"] == "stream"
    assert by_line[9]["param"] == "body.messages"
    # The error file has a line for each, with its custom_id where the line had one.
    assert [e["custom_id"] for e in checked.error_lines] == [
        None,
        "dup",
        "wrong-url",
        "get",
        None,
        "streams",
        "no-messages",
        None,
    ]


def test_empty_and_oversized_files_are_refused_whole() -> None:
    assert validate(b"\n\n", CHAT).errors[0]["code"] == "empty_file"


def test_each_endpoint_parses_its_own_bodies() -> None:
    embed = orjson.dumps(
        {
            "custom_id": "e",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "demo", "input": "x"},
        }
    )
    line = parse_line(1, embed, "/v1/embeddings")
    result = InferenceResult("", "stop", Usage(1, 0), "", "demo", embeddings=[[0.5, 0.25]])
    body = line.body("embd-1", "demo", 0, result)
    assert body["object"] == "list" and body["data"][0]["embedding"] == [0.5, 0.25]
    chat = parse_line(3, chat_line("c"), CHAT)
    reply = chat.body("chatcmpl-1", "demo", 7, InferenceResult("yes", "stop", Usage(2, 1)))
    assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["content"]
    out = output_line(chat, "chatcmpl-1", reply)
    assert out["custom_id"] == "c" and out["response"]["status_code"] == 200
    assert out["id"].startswith("batch_req_")


def test_an_error_line_carries_the_status_and_openai_error() -> None:
    from tiller.common.errors import RateLimited

    chat = parse_line(1, chat_line("c"), CHAT)
    failed = error_line(chat, RateLimited("Token budget of this key used up: 10 tokens."))
    assert failed["response"]["status_code"] == 429
    assert failed["response"]["body"]["error"]["code"] == "rate_limit_exceeded"
    assert failed["error"]["message"].startswith("Token budget")
