r"""Custom recognizers, declared in models.yaml: a new kind of personal data is configuration.

    pii:
      recognizers:
        - type: EMPLOYEE_ID
          pattern: 'EMP-\d{6}'
          context: [사번, employee]     # words that make a match likelier (within 40 chars)
          score: 0.3                   # below min_score: counts only next to a context word
        - type: IBAN
          pattern: '[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?'
          validator: iban             # a check from checks.VALIDATORS

A match scores `score`, plus CONTEXT_BOOST when a context word is near (as a word of its own);
a validator that says no drops it. A match a check-digit validator passed (luhn, card, iban,
registration_checksum) wins where it overlaps another finding (findings.resolve).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tiller.common.pii.checks import CHECK_DIGITS, VALIDATORS
from tiller.common.pii.findings import BUILT_IN_TYPES, Finding, has_context

CONTEXT_BOOST = 0.4
TYPE_NAME = r"^[A-Z][A-Z0-9_]{0,30}[A-Z0-9]$"
ValidatorName = Literal[
    "luhn", "card", "korean_registration", "registration_checksum", "ipv4", "ipv6", "iban"
]
assert set(ValidatorName.__args__) == set(VALIDATORS)  # type: ignore[attr-defined]


class RecognizerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Annotated[str, Field(pattern=TYPE_NAME)]
    pattern: Annotated[str, Field(min_length=1, max_length=1000)]
    validator: ValidatorName | None = None
    context: tuple[Annotated[str, Field(min_length=1, max_length=64)], ...] = ()
    context_window: Annotated[int, Field(ge=1, le=200)] = 40
    score: Annotated[float, Field(ge=0, le=1)] = 0.6

    @field_validator("type")
    @classmethod
    def _not_built_in(cls, value: str) -> str:
        if value in BUILT_IN_TYPES:
            raise ValueError(f"{value} is a built-in type")
        return value

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as error:
            raise ValueError(f"not a valid regular expression: {error}") from None
        if compiled.match(""):
            raise ValueError("matches the empty string")
        return value


class Recognizer:
    def __init__(self, spec: RecognizerSpec) -> None:
        self.spec = spec
        self.type = spec.type
        self.pattern = re.compile(spec.pattern)
        self.validate = VALIDATORS[spec.validator] if spec.validator else None
        self.checks_digits = spec.validator in CHECK_DIGITS
        self.context = tuple(word.lower() for word in spec.context)

    def find(self, text: str) -> Iterator[Finding]:
        spec = self.spec
        for match in self.pattern.finditer(text):
            if match.end() == match.start():
                continue
            if self.validate is not None and not self.validate(match.group()):
                continue
            score = spec.score
            if has_context(text, match.start(), match.end(), self.context, spec.context_window):
                score = min(1.0, score + CONTEXT_BOOST)
            yield Finding(self.type, match.start(), match.end(), score, checked=self.checks_digits)
