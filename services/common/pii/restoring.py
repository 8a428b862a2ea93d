"""Placeholders back to their values in an answer, whole or as it streams.

A streamed placeholder may arrive in pieces ("<EMA", "IL_1>"): a restorer holds back a tail
that could still become one and lets it go as soon as it cannot, so the client sees every
character once and never a half placeholder. Values restored into JSON (tool-call arguments)
are escaped as JSON string content.
"""

from __future__ import annotations

import json

from tiller.common.pii.redaction import PLACEHOLDER


def json_escaped(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)[1:-1]


class Restorer:
    def __init__(self, vault: dict[str, str], json_string: bool = False) -> None:
        self.values = {p: json_escaped(v) for p, v in vault.items()} if json_string else vault
        self.longest = max((len(p) for p in vault), default=0)
        self._held = ""

    def whole(self, text: str) -> str:
        if "<" not in text:
            return text
        return PLACEHOLDER.sub(lambda m: self.values.get(m.group(), m.group()), text)

    def feed(self, piece: str) -> str:
        """What of the stream so far can be sent: restored, minus a tail that may still
        turn out to be a placeholder."""
        text = self._held + piece
        self._held = ""
        cut = text.rfind("<")
        if cut != -1 and ">" not in text[cut:] and self._may_start(text[cut:]):
            text, self._held = text[:cut], text[cut:]
        return self.whole(text)

    def flush(self) -> str:
        """The held-back tail, at the end of the stream."""
        held, self._held = self._held, ""
        return held

    def _may_start(self, tail: str) -> bool:
        return len(tail) < self.longest and any(p.startswith(tail) for p in self.values)
