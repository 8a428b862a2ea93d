"""Finds personal data in a text: the built-in detectors and the custom recognizers."""

from __future__ import annotations

from collections.abc import Iterable

from tiller.common.pii.detectors import BUILT_IN, numeric_windows
from tiller.common.pii.findings import BUILT_IN_TYPES, DEFAULT_MIN_SCORE, Finding, resolve
from tiller.common.pii.recognizers import Recognizer, RecognizerSpec


class Scanner:
    def __init__(
        self, recognizers: Iterable[RecognizerSpec] = (), min_score: float = DEFAULT_MIN_SCORE
    ) -> None:
        self.custom = [Recognizer(spec) for spec in recognizers]
        self.min_score = min_score
        self.types: tuple[str, ...] = (*BUILT_IN_TYPES, *dict.fromkeys(r.type for r in self.custom))

    def find(self, text: str, types: Iterable[str] | None = None) -> list[Finding]:
        """The findings of `types` (every type if None) in text order, without overlaps."""
        wanted = set(self.types if types is None else types)
        if not wanted or not text:
            return []
        found: list[Finding] = []
        windows: list[tuple[int, int]] | None = None
        for detect, types_found, numeric in BUILT_IN:
            if not types_found & wanted:
                continue
            if not numeric:
                found.extend(detect(text))
                continue
            if windows is None:
                windows = numeric_windows(text)
            for start, end in windows:
                if start == 0 and end == len(text):
                    found.extend(detect(text))
                    continue
                found.extend(
                    Finding(f.type, f.start + start, f.end + start, f.score)
                    for f in detect(text[start:end])
                )
        for recognizer in self.custom:
            if recognizer.type in wanted:
                found.extend(recognizer.find(text))
        return resolve([f for f in found if f.type in wanted and f.score >= self.min_score])
