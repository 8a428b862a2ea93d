"""The chaos suite's clients (bench/chaos.py): plain HTTP, as a hand-written client would, each
request's fate kept in an `Outcome`.

A stream cut without [DONE] (its gateway died) is resumed on another gateway the documented way,
`GET /v1/chat/completions/{id}/stream` with `Last-Event-ID`: the id of the last event whose data
arrived.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

TIMEOUT = httpx.Timeout(90, connect=3)
REQUEST_ID = re.compile(r"\b(chatcmpl|req|resp)[-_][0-9A-Za-z_-]+")


@dataclass(frozen=True)
class Key:
    tag: str  # the first word of every prompt sent with it: the engine counts by it
    secret: str
    id: str
    limit: int  # its concurrency limit; 0: none

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.secret}"}


def prompt(key: Key, words: int) -> str:
    return " ".join([key.tag, *(f"w{i}" for i in range(1, words))])


def expected(said: str, max_tokens: int = 0) -> str:
    """What the demo engine answers to a last user message (checked once at start-up), cut at
    `max_tokens` (a word each) if that is set."""
    words = f"You said: {said}".split(" ")
    return " ".join(words[:max_tokens] if max_tokens else words)


@dataclass
class Outcome:
    key: Key
    expected: str
    status: int = 0  # the HTTP status of the first answer; 0: none came
    accepted: bool = False  # 200 (or 202) and the answer began
    request_id: str = ""
    last_id: str = ""
    text: str = ""
    done: bool = False
    resumed: bool = False
    stopped: bool = False  # the suite hung up on purpose
    errors: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        """Tokens the client got: the demo engine writes one word per token."""
        return len(self.text.split())

    @property
    def whole(self) -> bool:
        return self.text == self.expected

    @property
    def duplicated(self) -> bool:
        """Some of the answer came twice: a word of an answer whose words are all different
        (the suite's prompts are) came more than once; otherwise, more words than the answer."""
        words, answer = self.text.split(), self.expected.split()
        if len(set(answer)) == len(answer):
            return len(set(words)) < len(words)
        return not self.whole and len(words) > len(answer)

    @property
    def lost(self) -> bool:
        return self.accepted and not self.stopped and not self.whole and not self.duplicated


def short(message: str) -> str:
    """An error message without request ids (so equal errors count together), cut short."""
    message = REQUEST_ID.sub("<id>", message)
    return message if len(message) <= 60 else message[:57] + "..."


def read_sse(response: httpx.Response, outcome: Outcome, stop: threading.Event | None) -> None:
    pending = ""
    for line in response.iter_lines():
        if stop is not None and stop.is_set():
            outcome.stopped = True
            return
        if line.startswith("id: "):
            pending = line[4:]
        elif line == "data: [DONE]":
            outcome.done = True
            return
        elif line.startswith("data: "):
            chunk = orjson.loads(line[6:])
            outcome.last_id = pending or outcome.last_id
            if "error" in chunk:
                outcome.errors.append(short(str(chunk["error"].get("message"))))
            for choice in chunk.get("choices") or []:
                outcome.text += (choice.get("delta") or {}).get("content") or ""


def _error_of(response: httpx.Response) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text
    return f"HTTP {response.status_code}: {short(str(message))}"


def stream(
    http: httpx.Client,
    url: str,
    outcome: Outcome,
    body: dict[str, Any],
    stop: threading.Event | None = None,
) -> None:
    """POST a streamed chat completion; the outcome says how it went."""
    try:
        with http.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json=body | {"stream": True},
            headers=outcome.key.headers,
        ) as r:
            outcome.status = r.status_code
            outcome.request_id = r.headers.get("x-request-id", "")
            if r.status_code != 200:
                r.read()
                outcome.errors.append(_error_of(r))
                return
            outcome.accepted = True
            read_sse(r, outcome, stop)
    except httpx.HTTPError as error:
        outcome.errors.append(
            f"{'cut' if outcome.accepted else 'no answer'}: {type(error).__name__}"
        )


def resume(http: httpx.Client, url: str, outcome: Outcome, stop: threading.Event | None) -> None:
    """Read the rest of a cut stream through the gateway at `url`."""
    outcome.resumed = True
    headers = outcome.key.headers | ({"last-event-id": outcome.last_id} if outcome.last_id else {})
    try:
        with http.stream(
            "GET",
            f"{url}/v1/chat/completions/{outcome.request_id}/stream",
            headers=headers,
        ) as r:
            if r.status_code != 200:
                r.read()
                outcome.errors.append("resume " + _error_of(r))
                return
            read_sse(r, outcome, stop)
    except httpx.HTTPError as error:
        outcome.errors.append(f"resume cut: {type(error).__name__}")


def stream_or_resume(
    url: str, other: str, outcome: Outcome, body: dict[str, Any], stop: threading.Event | None
) -> None:
    """A stream through `url`; if it is cut, resumed once through `other`."""
    with httpx.Client(timeout=TIMEOUT) as http:
        stream(http, url, outcome, body, stop)
        if outcome.accepted and not outcome.done and not outcome.stopped and outcome.request_id:
            time.sleep(0.5)
            resume(http, other, outcome, stop)


def background(urls: tuple[str, str], outcome: Outcome, body: dict[str, Any], wait: float) -> None:
    """POST a background request, then poll for its result through either gateway until it
    ends or `wait` seconds pass; errors while polling (a store away) are retried."""
    with httpx.Client(timeout=TIMEOUT) as http:
        try:
            r = http.post(
                f"{urls[0]}/v1/chat/completions",
                json=body | {"background": True},
                headers=outcome.key.headers,
            )
        except httpx.HTTPError as error:
            outcome.errors.append(f"no answer: {type(error).__name__}")
            return
        outcome.status = r.status_code
        if r.status_code != 202:
            outcome.errors.append(_error_of(r))
            return
        outcome.accepted = True
        outcome.request_id = r.json()["id"]
        _await_result(http, urls, outcome, wait)


def _await_result(http: httpx.Client, urls: tuple[str, str], outcome: Outcome, wait: float) -> None:
    deadline, turn = time.monotonic() + wait, 0
    while time.monotonic() < deadline:
        turn += 1
        try:
            r = http.get(
                f"{urls[turn % 2]}/v1/chat/completions/{outcome.request_id}",
                headers=outcome.key.headers,
            )
        except httpx.HTTPError:
            time.sleep(0.5)
            continue
        found = r.json() if r.status_code == 200 else {}
        if found.get("status") in ("completed", "failed", "cancelled"):
            outcome.done = True
            if found.get("error"):
                outcome.errors.append(short(str(found["error"].get("message"))))
            for choice in found.get("choices") or []:
                outcome.text += (choice.get("message") or {}).get("content") or ""
            return
        time.sleep(0.5)
    outcome.errors.append(f"no result in {wait:.0f} s")


def ask(url: str, outcome: Outcome, body: dict[str, Any]) -> None:
    """One unstreamed chat completion."""
    try:
        r = httpx.post(
            f"{url}/v1/chat/completions", json=body, headers=outcome.key.headers, timeout=TIMEOUT
        )
    except httpx.HTTPError as error:
        outcome.errors.append(f"no answer: {type(error).__name__}")
        return
    outcome.status = r.status_code
    if r.status_code != 200:
        outcome.errors.append(_error_of(r))
        return
    outcome.accepted = outcome.done = True
    for choice in r.json().get("choices") or []:
        outcome.text += (choice.get("message") or {}).get("content") or ""


def hang_up_early(url: str, outcome: Outcome, body: dict[str, Any], after: float) -> str:
    """A stream whose client leaves `after` seconds in, whatever it got: "before headers"
    (its answer had not begun), "after headers", or the refusal's status."""
    timeout = httpx.Timeout(connect=3, read=after, write=3, pool=3)
    try:
        with httpx.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json=body | {"stream": True},
            headers=outcome.key.headers,
            timeout=timeout,
        ) as r:
            outcome.status = r.status_code
            outcome.stopped = True
            return "after headers" if r.status_code == 200 else f"HTTP {r.status_code}"
    except httpx.ReadTimeout:
        outcome.stopped = True
        return "before headers"
    except httpx.HTTPError as error:
        outcome.errors.append(f"no answer: {type(error).__name__}")
        return "error"
