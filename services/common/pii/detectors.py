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

import bisect
import functools
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import phonenumbers

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

log = logging.getLogger(__name__)

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


# Runs of digits and the separators people type between them, starting with + (international)
# or 0 (a Korean trunk prefix: 010, 02, 031, 070, ...; business numbers such as 1588-xxxx are
# not personal data). A run may hold one number, several, or a number and what follows it
# ("010-1234-5678 3시"): it is split at whitespace and read piece by piece.
_PHONE_RUN = re.compile(r"(?<![A-Za-z0-9+(])(?:\(\+|[+(])?\d[\d \t().\-]*\d")
_PIECE = re.compile(r"\S+")
_MIN_PHONE_DIGITS, _MAX_PHONE_DIGITS = 7, 15
_MAX_PIECES = 8  # "+33 1 42 68 53 00": numbers written in pairs take up to this many
# libphonenumber's parser is pure Python (~30 us a call): at most this many per text, for the
# international numbers its metadata patterns alone do not settle. Korean national numbers
# never need it.
_LIBRARY_CALLS = 64
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


@functools.lru_cache(maxsize=4096)
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
    budget = Budget(_LIBRARY_CALLS, len(text) // 2 + 2000)
    for run in _PHONE_RUN.finditer(text):
        if budget.tries <= 0:
            log.warning("phone scan stopped early", extra={"characters": len(text)})
            return
        group = run.group()
        if " " not in group and "\t" not in group:  # one piece, as most numbers are written
            if _NUMBER_START.match(group):
                found = _phone_at(
                    group, [(0, len(group))], [0, _digit_count(group)], 0, region, budget
                )
                if found is not None:
                    yield Finding(
                        PHONE, run.start() + found[1], run.start() + found[2], PHONE_SCORE
                    )
            continue
        pieces = [(m.start(), m.end()) for m in _PIECE.finditer(group)]
        counts = [0]  # digits in the pieces before each one
        for start, end in pieces:
            counts.append(counts[-1] + _digit_count(group[start:end]))
        first = 0
        while first < len(pieces):
            found = None
            if budget.tries > 0 and _NUMBER_START.match(group, pieces[first][0]):
                found = _phone_at(group, pieces, counts, first, region, budget)
            if found is None:
                first += 1
                continue
            last, start, end = found
            yield Finding(PHONE, run.start() + start, run.start() + end, PHONE_SCORE)
            first = last + 1


# How a number's first piece starts: +country code, or a trunk 0 and another digit ("02"),
# maybe in parentheses.
_NUMBER_START = re.compile(r"\+\d|\(?0\d|\(\+\d")
_WITHOUT_DIGITS = str.maketrans("", "", "0123456789")


def _digit_count(piece: str) -> int:
    return len(piece) - len(piece.translate(_WITHOUT_DIGITS))


def _phone_at(
    run: str,
    pieces: list[tuple[int, int]],
    counts: list[int],
    first: int,
    region: str,
    budget: Budget,
) -> tuple[int, int, int] | None:
    """The longest number starting at piece `first`: its last piece and its span, or None."""
    # Only the pieces that bring the digits to a phone number's length are worth reading.
    lowest = bisect.bisect_left(counts, counts[first] + _MIN_PHONE_DIGITS) - 1
    highest = bisect.bisect_right(counts, counts[first] + _MAX_PHONE_DIGITS) - 2
    for last in range(min(highest, first + _MAX_PIECES - 1), max(lowest, first) - 1, -1):
        budget.tries -= 1
        start, end = pieces[first][0], pieces[last][1]
        while end > start and not run[end - 1].isdigit():
            end -= 1
        span = run[start:end]
        international = span.lstrip("(").startswith("+")
        if span.startswith("(") and ")" not in span:  # "(010-1234-5678)": not its paren
            start, span = start + 1, span[1:]
        valid = _plainly_valid(span.translate(_ONLY_DIGITS), international)
        if not valid and international and budget.library > 0:
            budget.library -= 1
            valid = is_phone(span, region)
        if valid:
            return last, start, end
    return None


_ONLY_DIGITS = str.maketrans("", "", " \t().-+")


@dataclass
class Budget:
    """What one text may cost: libphonenumber calls, and numbers tried in all. Past it, the
    rest of the text is not searched for phone numbers (a warning is logged): text built to
    be slow (100 KB of "00 00 00") stops costing after about 0.15 s, while real text, phone
    lists included, stays far inside it. Masking protects a caller's data from engines and
    storage; it does not stop a caller set on writing a number no detector reads."""

    library: int
    tries: int


PHONE_SCORE = 0.9


def is_phone(value: str, region: str = "KR") -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(value, region))
    except phonenumbers.NumberParseException:
        return False


# A card number is written together or in the issuers' groups: 4-4-4-4 (-3), Amex 4-6-5,
# Diners 4-6-4. What may follow: anything but another group of four (a 20-digit reference is
# not a card plus change), so "4111 1111 1111 1111 12/26" and two cards in a row are found.
_CARD_TOGETHER = re.compile(r"(?<!\d)\d{13,19}(?!\d)")
_CARD_GROUPED = re.compile(
    r"(?<![\d\-])(?<!\d[ \-])\d{4}([ \-])"
    r"(?:\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?|\d{6}\1\d{4,5})(?!\d)(?!\1\d{4}(?!\d))"
)


def cards(text: str) -> Iterator[Finding]:
    for match in _CARD_TOGETHER.finditer(text):
        if checks.card(match.group()):
            yield Finding(CARD, match.start(), match.end(), CARD_SCORE)
    for match in _CARD_GROUPED.finditer(text):
        if checks.card(match.group()):
            yield Finding(CARD, match.start(), match.end(), CARD_SCORE)
        elif len(match.group()) == 23 and checks.card(match.group()[:19]):  # 16 and a CVC
            yield Finding(CARD, match.start(), match.start() + 19, CARD_SCORE)


CARD_SCORE = 0.95


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
