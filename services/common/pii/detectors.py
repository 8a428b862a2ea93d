"""The built-in detectors: a fast pattern finds candidates, a check decides.

- EMAIL: RFC 5321 shapes with a letter TLD; the local part has no leading, trailing or double dot.
- PHONE: every number Google's libphonenumber (`phonenumbers`) calls valid, Korean national
  forms (010-1234-5678, 02 123 4567, (031)123-4567, 01012345678) and international ones with +.
  A cheap pattern finds digit runs first; only those are handed to the library.
- CARD: 13-19 digits (optionally grouped by spaces or dashes) in a card network's issuer range
  and passing Luhn.
- KR_RRN / KR_FRN: resident and foreigner registration numbers, YYMMDD-GNNNNNN, with a real birth
  date and gender digit. The check digit raises confidence; numbers issued since October 2020
  have none, so without it a number must be written with its dash or near a context word
  (주민등록번호, RRN, 외국인등록번호, ...) to count: a bare 13-digit run is just as likely an
  order number.
- IP: IPv4 dotted quads (no leading zeros) and IPv6 in any form; a dotted quad right after
  "version" or "v" is a version number.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator

import phonenumbers
from phonenumbers import Leniency, PhoneNumberMatcher

from tiller.common.pii import checks
from tiller.common.pii.findings import (
    CARD,
    EMAIL,
    IP,
    KR_FRN,
    KR_RRN,
    PHONE,
    Finding,
    has_context,
)

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])"
    r"([A-Za-z0-9._%+\-]{1,64})@"
    r"((?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})"
    r"(?![A-Za-z0-9\-]|\.[A-Za-z0-9])"
)


def emails(text: str) -> Iterator[Finding]:
    if "@" not in text:
        return
    for match in _EMAIL.finditer(text):
        local = match.group(1)
        if local.startswith(".") or local.endswith(".") or ".." in local:
            continue
        yield Finding(EMAIL, match.start(), match.end(), 0.95)


# Digit runs that could be a phone number: 7+ digits, maybe a leading + or (, with the
# separators people type, starting with + (international) or 0 (a Korean trunk prefix: 010,
# 02, 031, 070, ...; business numbers such as 1588-xxxx are not personal data).
_PHONE_CANDIDATE = re.compile(r"(?<![A-Za-z0-9+])[+(]?\d[\d \t().\-]{5,24}\d")
_MIN_PHONE_DIGITS = 7
_SPACE = re.compile(r"\s")
_NUMBER_TYPES = (
    "fixed_line",
    "mobile",
    "toll_free",
    "premium_rate",
    "shared_cost",
    "personal_number",
    "voip",
    "pager",
    "uan",
    "voicemail",
)


@functools.cache
def _national_patterns(region: str) -> tuple[re.Pattern[str], tuple[re.Pattern[str], ...]]:
    """libphonenumber's own patterns for a region's valid national numbers (its metadata)."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None or metadata.general_desc is None:
        return re.compile("(?!)"), ()
    general = re.compile(str(metadata.general_desc.national_number_pattern))
    kinds = (getattr(metadata, name) for name in _NUMBER_TYPES)
    return general, tuple(
        re.compile(str(k.national_number_pattern)) for k in kinds if k and k.national_number_pattern
    )


def _valid_in(national: str, region: str) -> bool:
    general, kinds = _national_patterns(region)
    return bool(general.fullmatch(national)) and any(k.fullmatch(national) for k in kinds)


def _plainly_valid(number: str, international: bool) -> bool:
    """A number the library's patterns call valid, checked without its parser (20x faster):
    a Korean number with its trunk 0, or +country code and national number. A number this
    rejects still goes to the library, which knows the rarer forms."""
    if not international:
        return number.startswith("0") and _valid_in(number[1:], "KR")
    for digits in (1, 2, 3):  # country calling codes are prefix-free
        regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(number[:digits]))
        if regions:
            return any(_valid_in(number[digits:], region) for region in regions)
    return False


def phones(text: str, region: str = "KR") -> Iterator[Finding]:
    for candidate in _PHONE_CANDIDATE.finditer(text):
        span = candidate.group()
        head = span.removeprefix("(")
        if not head.startswith(("+", "0")):
            continue
        number = checks.digits(span)
        international = head.startswith("+")
        if len(number) < _MIN_PHONE_DIGITS:
            continue
        if len(number) > (15 if international else 11) and not _SPACE.search(span):
            continue  # longer than any one number, and not several written apart
        if _plainly_valid(number, international):
            start = candidate.start()
            if span.startswith("(") and ")" not in span:  # "(010-1234-5678)": not its paren
                start += 1
            yield Finding(PHONE, start, candidate.end(), PHONE_SCORE)
            continue
        # Several numbers in a row, international ones, rarer national forms: the library's
        # matcher, which also looks at what surrounds a number (give it a little of the text).
        left = max(0, candidate.start() - 2)
        window = text[left : candidate.end() + 2]
        for match in PhoneNumberMatcher(window, region, leniency=Leniency.VALID):
            yield Finding(PHONE, left + match.start, left + match.end, PHONE_SCORE)


PHONE_SCORE = 0.9


def is_phone(value: str, region: str = "KR") -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(value, region))
    except phonenumbers.NumberParseException:
        return False


# Not part of a longer run of digit groups (a 20-digit reference is not a card plus change).
_CARD_CANDIDATE = re.compile(
    r"(?<![\d\-])(?<!\d[ \-])\d(?:[ \-]?\d){12,18}(?!\d)(?![ \-]\d{4})(?!-\d)"
)
_CARD_GROUPS = re.compile(r"\d+(?:([ \-])\d+)*")


def cards(text: str) -> Iterator[Finding]:
    for match in _CARD_CANDIDATE.finditer(text):
        value = match.group()
        separators = set(re.findall(r"[ \-]", value))
        if len(separators) > 1:  # "1234 5678-9012..." is not how anyone writes a card
            continue
        if separators and any(len(g) < 4 for g in re.split(r"[ \-]", value)[:-1]):
            continue  # cards are written in groups of 4 (Amex 4-6-5)
        if checks.card(value):
            yield Finding(CARD, match.start(), match.end(), 0.95)


_REGISTRATION = re.compile(r"(?<![\d\-])(\d{6})( ?[\-\u2013] ?| )?(\d{7})(?![\d])(?!-\d)")
REGISTRATION_CONTEXT = (
    "주민등록",
    "주민번호",
    "주민",
    "외국인등록",
    "외국인 등록",
    "등록번호",
    "rrn",
    "resident registration",
    "registration number",
    "registration no",
    "alien registration",
    "foreigner registration",
    "arc",
)
_CONTEXT_WINDOW = 40


def registrations(text: str) -> Iterator[Finding]:
    for match in _REGISTRATION.finditer(text):
        value = match.group(1) + match.group(3)
        kind = checks.registration_kind(value)
        if kind is None:
            continue
        if checks.registration_checksum(value):
            score = 0.95
        elif match.group(2):  # written with its separator, as people write these
            score = 0.75
        else:
            score = 0.3
        if score < 0.95 and has_context(
            text, match.start(), match.end(), REGISTRATION_CONTEXT, _CONTEXT_WINDOW
        ):
            score = min(1.0, score + 0.4)
        yield Finding(KR_RRN if kind == "resident" else KR_FRN, match.start(), match.end(), score)


_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# ASCII edges: Korean text runs straight into an address ("10.0.0.1에서").
_IPV4 = re.compile(rf"(?<![A-Za-z0-9_.])(?:{_OCTET}\.){{3}}{_OCTET}(?![A-Za-z0-9_]|\.\d)")
_IPV6 = re.compile(
    r"(?<![A-Za-z0-9_:.])(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![A-Za-z0-9_:]|\.\d)"
)
# Above a phone number's: libphonenumber reads some dotted quads as numbers (10.10.1.25).
IP_SCORE = 0.92
_VERSION_BEFORE = re.compile(r"(?<![A-Za-z])(?:version|ver\.?|release|v)\s*$|버전\s*$", re.I)


def ipv4s(text: str) -> Iterator[Finding]:
    if "." not in text:
        return
    for match in _IPV4.finditer(text):
        if _VERSION_BEFORE.search(text[max(0, match.start() - 12) : match.start()]):
            continue
        yield Finding(IP, match.start(), match.end(), IP_SCORE)


def ipv6s(text: str) -> Iterator[Finding]:
    for left, right in _colon_runs(text):
        for match in _IPV6.finditer(text, left, min(len(text), right + 1)):
            if checks.ipv6(match.group()):
                yield Finding(IP, match.start(), match.end(), IP_SCORE)


_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")


def _colon_runs(text: str) -> Iterator[tuple[int, int]]:
    """The runs of hex digits, colons and dots with two colons or more: where an IPv6 address
    can be. Found from the colons, so ordinary prose costs next to nothing."""
    at = text.find(":")
    while at != -1:
        left = right = at
        while left > 0 and text[left - 1] in _IPV6_CHARS:
            left -= 1
        while right < len(text) and text[right] in _IPV6_CHARS:
            right += 1
        if text.count(":", left, right) >= 2:
            yield left, right
        at = text.find(":", right)


Detector = Callable[[str], Iterator[Finding]]
# Each detector, the types it finds, and whether it only looks at numbers: those run on the
# stretches of text around digits alone (see numeric_windows), so prose costs them nothing.
BUILT_IN: tuple[tuple[Detector, frozenset[str], bool], ...] = (
    (emails, frozenset({EMAIL}), False),
    (phones, frozenset({PHONE}), True),
    (cards, frozenset({CARD}), True),
    (registrations, frozenset({KR_RRN, KR_FRN}), True),
    (ipv4s, frozenset({IP}), True),
    (ipv6s, frozenset({IP}), False),
)
# Enough of the text on each side of a number for every look around it: context words
# (40 characters), "version" before a dotted quad, the edges the patterns check.
_MARGIN = 48
# Digits with less than two margins of anything else between them: one stretch to look at.
_NUMBERS = re.compile(rf"\d(?:\D{{0,{2 * _MARGIN}}}\d)*")


def numeric_windows(text: str) -> list[tuple[int, int]]:
    """The stretches of `text` around its digits, or []."""
    windows = [(max(0, m.start() - _MARGIN), m.end() + _MARGIN) for m in _NUMBERS.finditer(text)]
    return [(start, min(end, len(text))) for start, end in windows]
