"""mask+restore on the way out: the answer's events with placeholders turned back into the
caller's own values, in the text, in the engine's own choices (content, tool-call arguments,
legacy text) and in the final result.

Each stream of text (the answer; each choice's content; each tool call's arguments) has its own
restorer, which holds back a tail that may be the start of a placeholder. A choice's held text
goes out with its finish_reason; the answer's, just before the done event.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

from tiller.common.pii.restoring import Restorer
from tiller.contract.events import Choices, Delta, Done, Event
from tiller.contract.results import InferenceResult


class AnswerRestorer:
    def __init__(self, vault: dict[str, str]) -> None:
        self.vault = vault
        self.text = Restorer(vault)
        self.parts: dict[tuple[int, str, int], Restorer] = {}
        self.engines_own = False  # the engine's choices carry the answer (pass-through)
        self.unsent = 0  # tokens of deltas held back whole: they go out with the next one

    def restore(self, batch: Iterable[Event]) -> Iterator[Event]:
        for event in batch:
            if isinstance(event, Delta):
                delta = self._delta(event)
                if delta.text or delta.chunks:  # not all of it held back
                    if self.unsent:
                        tokens = delta.tokens + self.unsent
                        delta = Delta(delta.text, tokens, delta.chunks, delta.id)
                        self.unsent = 0
                    yield delta
                else:
                    self.unsent += event.tokens
            elif isinstance(event, Done):
                held = self.text.flush()
                if self.engines_own:  # the choices hold the same text: theirs goes out
                    if leftovers := self._flush_all():
                        yield Delta("", 0, (leftovers,), event.id)
                elif held:
                    yield Delta(held, self.unsent, (), event.id)
                    self.unsent = 0
                yield Done(self._done(event.result), event.id)
            else:
                yield event

    def _delta(self, event: Delta) -> Delta:
        # Events may be shared by several readers: copy, never mutate.
        text = self.text.feed(event.text)
        if not event.chunks:  # built directly: dataclasses.replace costs as much as the restoring
            return Delta(text, event.tokens, (), event.id)
        self.engines_own = True
        chunks = tuple([self._choice(c) for c in copy.deepcopy(chunk)] for chunk in event.chunks)
        return Delta(text, event.tokens, chunks, event.id)

    def _restorer(self, index: int, part: str, call: int = 0) -> Restorer:
        key = (index, part, call)
        restorer = self.parts.get(key)
        if restorer is None:
            restorer = self.parts[key] = Restorer(self.vault, json_string=part == "arguments")
        return restorer

    def _choice(self, choice: dict[str, Any]) -> dict[str, Any]:
        index = int(choice.get("index", 0))
        delta = choice.get("delta")
        if isinstance(delta, dict):
            if isinstance(delta.get("content"), str):
                delta["content"] = self._restorer(index, "content").feed(delta["content"])
            for call in delta.get("tool_calls") or ():
                function = call.get("function") or {}
                if isinstance(function.get("arguments"), str):
                    restorer = self._restorer(index, "arguments", int(call.get("index", 0)))
                    function["arguments"] = restorer.feed(function["arguments"])
        elif isinstance(choice.get("text"), str):  # a legacy completion's choice
            choice["text"] = self._restorer(index, "text").feed(choice["text"])
        if choice.get("finish_reason"):
            self._flush_into(choice, index)
        return choice

    def _flush_into(self, choice: dict[str, Any], index: int) -> None:
        """Send what the choice's restorers still hold with its last chunk."""
        for (owner, part, call), restorer in list(self.parts.items()):
            if owner != index:
                continue
            held = restorer.flush()
            del self.parts[(owner, part, call)]
            if not held:
                continue
            if part == "text":
                choice["text"] = choice.get("text", "") + held
                continue
            delta = choice.setdefault("delta", {})
            if part == "content":
                delta["content"] = (delta.get("content") or "") + held
                continue
            calls = delta.setdefault("tool_calls", [])
            same = next((c for c in calls if int(c.get("index", 0)) == call), None)
            if same is None:
                calls.append({"index": call, "function": {"arguments": held}})
            else:
                function = same.setdefault("function", {})
                function["arguments"] = (function.get("arguments") or "") + held

    def _flush_all(self) -> Choices:
        """Choices that never finished: what their restorers hold, as one chunk."""
        chunk: list[dict[str, Any]] = []
        for index in sorted({owner for owner, _, _ in self.parts}):
            legacy = any(part == "text" for owner, part, _ in self.parts if owner == index)
            choice: dict[str, Any] = {"index": index} if legacy else {"index": index, "delta": {}}
            self._flush_into(choice, index)
            if choice.get("text") or choice.get("delta"):
                chunk.append(choice)
        return chunk

    def _done(self, result: InferenceResult) -> InferenceResult:
        whole = Restorer(self.vault).whole
        arguments = Restorer(self.vault, json_string=True).whole
        choices = copy.deepcopy(result.choices)
        for choice in choices or ():
            if isinstance(choice.get("text"), str):
                choice["text"] = whole(choice["text"])
            message = choice.get("message")
            if not isinstance(message, dict):
                continue
            if isinstance(message.get("content"), str):
                message["content"] = whole(message["content"])
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                if isinstance(function.get("arguments"), str):
                    function["arguments"] = arguments(function["arguments"])
        return dataclasses.replace(result, text=whole(result.text), choices=choices)
