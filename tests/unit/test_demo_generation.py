from __future__ import annotations

from typing import Any

from tiller.demo_engine.generation import answer, prompt_tokens


def test_answer_echoes_the_last_user_message_token_by_token() -> None:
    messages = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "Hello  Tiller"},
    ]
    tokens, finish = answer(messages, None)
    assert tokens == ["You", " said:", " Hello", "  Tiller"]
    assert "".join(tokens) == "You said: Hello  Tiller" and finish == "stop"
    assert prompt_tokens(messages) == 4


def test_max_tokens_cuts_the_answer_with_length() -> None:
    tokens, finish = answer([{"role": "user", "content": "one two three"}], 2)
    assert tokens == ["You", " said:"] and finish == "length"


def test_content_parts_count_as_text() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "a b"}]}]
    assert prompt_tokens(messages) == 2
    assert "".join(answer(messages, None)[0]) == "You said: a b"


def test_a_tools_result_is_answered_with_what_it_said() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "sunny"}]},
    ]
    assert "".join(answer(messages, None)[0]) == "The tool said: sunny"
    assert answer(messages, 2) == (["The", " tool"], "length")
