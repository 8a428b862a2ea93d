"""What a detector reports: a typed span of a text and how sure it is."""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

# The built-in types; custom recognizers add their own (models.yaml `pii.recognizers`).
EMAIL, PHONE, CARD, KR_RRN, KR_FRN, IP = "EMAIL", "PHONE", "CARD", "KR_RRN", "KR_FRN", "IP"
BUILT_IN_TYPES = (EMAIL, PHONE, CARD, KR_RRN, KR_FRN, IP)
# A finding at or above this score is masked unless the models.yaml says otherwise.
DEFAULT_MIN_SCORE = 0.5


class Finding(NamedTuple):
    """A tuple, not a dataclass: a dense text makes one per number, and a frozen dataclass
    costs five times as much to build."""

    type: str
    start: int
    end: int
    score: float
    # Types of findings that overlapped this one and were merged into it (its span covers
    # theirs): a `block` policy on any of them still refuses the request.
    covers: frozenset[str] = frozenset()
    # The value passed a check digit (Luhn, mod 97, a registration number's): the strongest
    # evidence there is, so where findings overlap, a checked one names the placeholder.
    checked: bool = False


def has_context(text: str, start: int, end: int, words: tuple[str, ...], window: int) -> bool:
    """Whether one of `words` is within `window` characters of the span, in any case, as a word
    of its own: `arc` is not in `parcel`, nor `rrn` in `Warrnambool`."""
    if not words:
        return False
    pattern = context_pattern(words)
    return bool(
        pattern.search(text, max(0, start - window), start)
        or pattern.search(text, end, end + window)
    )


@functools.lru_cache(maxsize=256)
def context_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    """The words as one pattern. A word that begins or ends with a Latin letter or digit must
    not run on into another there (word boundaries); Hangul ends may (particles attach: 주민
    번호는), so a Hangul word is a whole term (주민등록, not 주민, which 주민센터 holds).

    Each alternative starts with its first character (cased both ways) and checks the boundary
    before it only then, so the regex engine skips ahead between candidates (twice as fast as
    a leading lookbehind with re.IGNORECASE)."""
    terms = sorted({w.strip() for w in words if w.strip()}, key=len, reverse=True)
    return re.compile("|".join(_alternative(w) for w in terms) or "(?!)")


def _alternative(word: str) -> str:
    body = r"\s*".join("".join(_either_case(c) for c in part) for part in word.split())
    first = _either_case(word[0])
    if _latin(word[0]):
        body = f"{first}(?<![A-Za-z0-9]{first}){body[len(first) :]}"
    return body + ("(?![A-Za-z0-9])" if _latin(word[-1]) else "")


def _either_case(char: str) -> str:
    lower, upper = char.lower(), char.upper()
    if lower == upper or len(lower) != 1 or len(upper) != 1:
        return re.escape(char)
    return f"[{re.escape(lower)}{re.escape(upper)}]"


def _latin(char: str) -> bool:
    return char.isascii() and char.isalnum()


def resolve(findings: list[Finding]) -> list[Finding]:
    """Non-overlapping findings in text order. Where two overlap they become one, spanning
    both (no part of either is left unmasked), of the type with the stronger evidence: a
    checked value first (a valid IBAN holds digits a phone pattern also reads), then the
    higher score, then the longer span, then the earlier."""
    if len(findings) < 2:
        return findings
    kept: list[Finding] = []
    for finding in sorted(findings, key=lambda f: (f.start, f.end)):
        if kept and finding.start < kept[-1].end:
            kept[-1] = _merge(kept[-1], finding)
            continue
        kept.append(finding)
    return kept


def _merge(one: Finding, other: Finding) -> Finding:
    winner, loser = (other, one) if _rank(other) < _rank(one) else (one, other)
    return Finding(
        winner.type,
        min(one.start, other.start),
        max(one.end, other.end),
        winner.score,
        (winner.covers | loser.covers | {loser.type}) - {winner.type},
        winner.checked,
    )


def _rank(finding: Finding) -> tuple[bool, float, int, int]:
    return (not finding.checked, -finding.score, finding.start - finding.end, finding.start)
