"""What a detector reports: a typed span of a text and how sure it is."""

from __future__ import annotations

from dataclasses import dataclass

# The built-in types; custom recognizers add their own (models.yaml `pii.recognizers`).
EMAIL, PHONE, CARD, KR_RRN, KR_FRN, IP = "EMAIL", "PHONE", "CARD", "KR_RRN", "KR_FRN", "IP"
BUILT_IN_TYPES = (EMAIL, PHONE, CARD, KR_RRN, KR_FRN, IP)
# A finding at or above this score is masked unless the models.yaml says otherwise.
DEFAULT_MIN_SCORE = 0.5


@dataclass(frozen=True, slots=True)
class Finding:
    type: str
    start: int
    end: int
    score: float
    # Types of findings that overlapped this one and were merged into it (its span covers
    # theirs): a `block` policy on any of them still refuses the request.
    covers: frozenset[str] = frozenset()


def has_context(text: str, start: int, end: int, words: tuple[str, ...], window: int) -> bool:
    """Whether one of `words` (lower case) is within `window` characters of the span."""
    if not words:
        return False
    around = (text[max(0, start - window) : start] + " " + text[end : end + window]).lower()
    return any(word in around for word in words)


def resolve(findings: list[Finding]) -> list[Finding]:
    """Non-overlapping findings in text order. Where two overlap they become one, spanning
    both (no part of either is left unmasked), of the surer one's type (then the longer's,
    then the earlier's)."""
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
    )


def _rank(finding: Finding) -> tuple[float, int, int]:
    return (-finding.score, finding.start - finding.end, finding.start)
