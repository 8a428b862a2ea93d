"""A model's defaults and system prompt live in models.yaml: requests that leave a parameter
unset get the model's, and requests without a system message get its system prompt."""

from __future__ import annotations

import httpx

from tests.support import Stack


async def ask(stack: Stack, messages: list[dict[str, str]], **extra: object) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        reply = await http.post(
            "/chat/completions",
            json={"model": "terse", "messages": messages, **extra},
            headers={"authorization": f"Bearer {stack.admin_key}"},
        )
    assert reply.status_code == 200, reply.text
    body: dict[str, object] = reply.json()
    return body


async def test_defaults_and_system_prompt_apply_where_the_request_is_silent(stack: Stack) -> None:
    user = [{"role": "user", "content": "one two three four"}]
    defaulted = await ask(stack, user)
    chosen = await ask(stack, user, max_tokens=5)
    own_system = await ask(stack, [{"role": "system", "content": "Mine."}, *user])
    # max_tokens 3 from YAML cuts the demo answer ("You said: one two three four") short.
    assert defaulted["choices"][0]["message"]["content"] == "You said: one"  # type: ignore[index]
    assert defaulted["choices"][0]["finish_reason"] == "length"  # type: ignore[index]
    assert chosen["choices"][0]["message"]["content"] == "You said: one two three"  # type: ignore[index]
    # The demo engine counts every message's words: "Be brief." adds 2 to the user's 4; a
    # request with its own system message ("Mine.", 1 word) gets no other.
    assert defaulted["usage"]["prompt_tokens"] == 6  # type: ignore[index]
    assert own_system["usage"]["prompt_tokens"] == 5  # type: ignore[index]
