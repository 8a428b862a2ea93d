"""One request's masking: findings become typed placeholders, the same value the same one.

    redaction = Redaction(scanner, policies)
    texts = [redaction.mask(t) for t in texts]      # after redaction.check(texts) for `block`

The placeholder of a value is <TYPE_n>, numbered per type in order of appearance. Numbers a
request already uses in such a form are skipped, so restoring never rewrites the caller's own
text. `vault` maps the placeholders whose type is under mask+restore back to their values; it
lives in the gateway's memory for the request's life and is never stored.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from tiller.common.pii.findings import Finding
from tiller.common.pii.policy import BLOCK, MASK_RESTORE, OFF, Policies
from tiller.common.pii.scanner import Scanner

PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)_(\d+)>")


class Blocked(Exception):
    def __init__(self, types: list[str]) -> None:
        super().__init__(", ".join(types))
        self.types = types


class Redaction:
    def __init__(self, scanner: Scanner, policies: Policies) -> None:
        self.scanner = scanner
        self.policies = policies
        self.modes = {t: policies.mode_for(t) for t in scanner.types}
        self.watched = tuple(t for t, mode in self.modes.items() if mode != OFF)
        self.counts: Counter[str] = Counter()  # findings by type, for logs and metrics
        self.vault: dict[str, str] = {}  # placeholder -> original (mask+restore types only)
        self._placeholders: dict[tuple[str, str], str] = {}
        self._taken: set[str] = set()
        self._next: Counter[str] = Counter()
        self._found: dict[str, list[Finding]] = {}

    def check(self, texts: Iterable[str]) -> None:
        """Find what the texts hold; raise Blocked naming the types a `block` policy refuses."""
        blocked: set[str] = set()
        for text in texts:
            if text in self._found:
                continue
            self._taken.update(m.group() for m in PLACEHOLDER.finditer(text))
            findings = self.scanner.find(text, self.watched) if self.watched else []
            self._found[text] = findings
            for finding in findings:
                for type_ in (finding.type, *finding.covers):
                    if self.modes.get(type_) == BLOCK:
                        blocked.add(type_)
        if blocked:
            raise Blocked(sorted(blocked))

    def mask(self, text: str) -> str:
        if text not in self._found:
            self.check([text])
        findings = self._found[text]
        if not findings:
            return text
        parts: list[str] = []
        done = 0
        for finding in findings:
            value = text[finding.start : finding.end]
            parts.append(text[done : finding.start])
            parts.append(self._placeholder(finding.type, value))
            done = finding.end
        parts.append(text[done:])
        return "".join(parts)

    def _placeholder(self, type_: str, value: str) -> str:
        self.counts[type_] += 1
        known = self._placeholders.get((type_, value))
        if known is not None:
            return known
        while True:
            self._next[type_] += 1
            placeholder = f"<{type_}_{self._next[type_]}>"
            if placeholder not in self._taken:
                break
        self._placeholders[(type_, value)] = placeholder
        if self.modes[type_] == MASK_RESTORE:
            self.vault[placeholder] = value
        return placeholder
