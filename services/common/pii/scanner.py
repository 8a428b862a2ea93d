"""Finds personal data in a text: the built-in detectors and the custom recognizers."""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Iterable

from tiller.common.pii.detectors import built_in
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
        original, text = text, ascii_forms(text)
        found = built_in(text, wanted)
        for recognizer in self.custom:
            if recognizer.type in wanted:
                found.extend(recognizer.find(original))
        return resolve([f for f in found if f.type in wanted and f.score >= self.min_score])


def ascii_forms(text: str) -> str:
    """`text` with other scripts' digits (fullwidth, Arabic-Indic, ...), fullwidth ASCII (the
    at sign, hyphen and full stop too) and other dashes as their ASCII forms, one character for
    one, so spans stay those of `text`: the built-in detectors read 010-1234-5678 however it is
    typed."""
    if text.isascii() or not _UNCOMMON.search(text) or not _other_forms().search(text):
        return text
    return text.translate(_ascii_table())


# None of the characters ascii_forms changes is ASCII or Hangul: a text of only those (most
# Korean and English text) is searched with this short class, not the long one (100x faster).
_UNCOMMON = re.compile("[^\x00-\x7f\uac00-\ud7a3\u1100-\u11ff\u3131-\u318e]")


@functools.cache
def _other_forms() -> re.Pattern[str]:
    ranges: list[list[int]] = []
    for code in sorted(_ascii_table()):
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in ranges) + "]")


@functools.cache
def _ascii_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for code in range(128, sys.maxunicode + 1):
        digit = unicodedata.decimal(chr(code), None)
        if digit is not None:
            table[code] = str(digit)
    table.update({code: chr(code - 0xFEE0) for code in range(0xFF01, 0xFF5F)})  # fullwidth
    table.update(dict.fromkeys((0x2010, 0x2011, 0x2012, 0x2013, 0x2014, 0x2212, 0xFE63), "-"))
    table[0x3000] = " "  # ideographic space
    return table
