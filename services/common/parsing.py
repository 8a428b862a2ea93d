"""Reading numbers out of text a caller wrote (headers, query strings)."""

from __future__ import annotations


def whole_number(text: str) -> int | None:
    """A non-negative integer written in ASCII digits, else None. (`str.isdigit` also accepts
    "²" and other digits that `int` refuses: a header of them must be a 400, not a crash.)"""
    digits = text.strip()
    if not (digits and digits.isascii() and digits.isdigit()):
        return None
    return int(digits)
