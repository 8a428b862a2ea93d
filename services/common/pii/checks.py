"""The checks that turn a pattern match into a finding: checksums, calendars, issuer ranges.

Each takes the matched text and says whether it can be what the pattern claims. Custom
recognizers (models.yaml `pii.recognizers`) name them as `validator:`.
"""

from __future__ import annotations

import datetime
import ipaddress
import operator
import re
from collections.abc import Callable

_NOT_DIGITS = re.compile(r"\D+")


def digits(value: str) -> str:
    return value if value.isdigit() and value.isascii() else _NOT_DIGITS.sub("", value)


def luhn(value: str) -> bool:
    """The Luhn (mod 10) check that every payment card number carries."""
    number = digits(value)
    if len(number) < 2:
        return False
    total = sum(map(int, number[-1::-2])) + sum(_DOUBLED[c] for c in number[-2::-2])
    return total % 10 == 0


# A digit's share of the Luhn sum when it is doubled.
_DOUBLED = {str(n): n * 2 - 9 if n > 4 else n * 2 for n in range(10)}


# Issuer prefixes (IIN ranges) of the card networks in use, with their lengths: a Luhn-valid
# number outside them is an account or order number, not a card.
_CARD_RANGES: tuple[tuple[int, int, tuple[int, ...]], ...] = (
    (4, 4, (13, 16, 19)),  # Visa
    (51, 55, (16,)),  # Mastercard
    (2221, 2720, (16,)),  # Mastercard 2-series
    (34, 34, (15,)),  # American Express
    (37, 37, (15,)),
    (6011, 6011, (16, 19)),  # Discover
    (644, 649, (16, 19)),
    (65, 65, (16, 19)),
    (3528, 3589, (16, 19)),  # JCB
    (62, 62, (16, 17, 18, 19)),  # UnionPay
    (36, 36, (14, 16)),  # Diners Club
    (300, 305, (14, 16)),
    (38, 39, (14, 16)),
)


# Every issuer prefix, as text, with the lengths its numbers have.
_CARD_PREFIXES: dict[str, tuple[int, ...]] = {
    str(prefix): lengths for low, high, lengths in _CARD_RANGES for prefix in range(low, high + 1)
}
_PREFIX_WIDTHS = sorted({len(p) for p in _CARD_PREFIXES})


def card_issuer(value: str) -> bool:
    number = digits(value)
    return any(len(number) in _CARD_PREFIXES.get(number[:width], ()) for width in _PREFIX_WIDTHS)


def card(value: str) -> bool:
    number = digits(value)
    return card_issuer(number) and luhn(number)


# Korean registration numbers: YYMMDD-GNNNNNN. G gives the century and whether the holder
# is Korean (1-4) or a foreign resident (5-8).
_CENTURY = {"1": 1900, "2": 1900, "3": 2000, "4": 2000, "5": 1900, "6": 1900, "7": 2000, "8": 2000}
_WEIGHTS = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)


def registration_kind(value: str, today: datetime.date | None = None) -> str | None:
    """ "resident" or "foreigner" when the number's birth date and gender digit are possible
    (a real calendar date, not in the future), else None."""
    number = digits(value)
    if len(number) != 13 or number[6] not in _CENTURY:
        return None
    try:
        born = datetime.date(
            _CENTURY[number[6]] + int(number[:2]), int(number[2:4]), int(number[4:6])
        )
    except ValueError:
        return None
    if born > (today or datetime.date.today()):
        return None
    return "resident" if number[6] in "1234" else "foreigner"


def registration_checksum(value: str) -> bool:
    """The check digit numbers issued before October 2020 carry (later ones have none)."""
    number = digits(value)
    if len(number) != 13:
        return False
    total: int = sum(map(operator.mul, map(int, number[:12]), _WEIGHTS))
    base = 11 if number[6] in "1234" else 13
    return (base - total % 11) % 10 == int(number[12])


def korean_registration(value: str) -> bool:
    return registration_kind(value) is not None


def ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def ipv6(value: str) -> bool:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return any(c not in ":" for c in value)  # "::" alone is no one's address


def iban(value: str) -> bool:
    """ISO 13616 mod-97 check of an IBAN (spaces allowed)."""
    compact = value.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{10,30}", compact):
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


# The validators that check a check digit: a value they pass is as sure as a value can be.
CHECK_DIGITS = frozenset({"luhn", "card", "registration_checksum", "iban"})

# What a custom recognizer's `validator:` may name.
VALIDATORS: dict[str, Callable[[str], bool]] = {
    "luhn": luhn,
    "card": card,
    "korean_registration": korean_registration,
    "registration_checksum": registration_checksum,
    "ipv4": ipv4,
    "ipv6": ipv6,
    "iban": iban,
}
