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


def has_context(text: str, start: int, end: int, words: tuple[str, ...], window: int) -> bool:
    """Whether one of `words` (lower case) is within `window` characters of the span."""
    if not words:
        return False
    around = (text[max(0, start - window) : start] + " " + text[end : end + window]).lower()
    return any(word in around for word in words)


def resolve(findings: list[Finding]) -> list[Finding]:
    """Non-overlapping findings in text order: where two overlap, the surer one (then the
    longer, then the earlier) wins."""
    kept: list[Finding] = []
    for finding in sorted(findings, key=lambda f: (f.start, f.end)):
        if kept and finding.start < kept[-1].end:
            if _rank(finding) < _rank(kept[-1]):
                kept[-1] = finding  # it starts after the one before the last ended
            continue
        kept.append(finding)
    return kept


def _rank(finding: Finding) -> tuple[float, int, int]:
    return (-finding.score, finding.start - finding.end, finding.start)
