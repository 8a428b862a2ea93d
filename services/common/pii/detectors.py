"""The built-in detectors: a fast pattern finds candidates, a check decides.

- EMAIL: RFC 5321 shapes with a letter TLD; the local part has no leading, trailing or double dot,
  and the "TLD" is not a file's extension (`icon@2x.png`).
- PHONE: phones.py.
- CARD: 13-19 digits (optionally grouped by spaces or dashes) in a card network's issuer range
  and passing Luhn.
- KR_RRN / KR_FRN: resident and foreigner registration numbers, YYMMDD-GNNNNNN, with a real birth
  date and gender digit. The check digit raises confidence; numbers issued since October 2020
  have none, so without it a number must be written with its dash or near a context word
  (주민등록번호, RRN, 외국인등록번호, ...) to count: a bare 13-digit run is just as likely an
  order number.
- IP: IPv4 dotted quads (no leading zeros) and IPv6 in any form; a dotted quad right after a
  version or numbering word (`version: `, `v`, `section`), a package pin or a product's slash is
  a version, and what code writes with `::` (`A::f()`, `a[::2]`) is code.

`built_in` runs them all in one pass: the runs of digits and separators that every number is
written in are found once (phones.NUMBER_RUN), and each numeric detector reads only the runs it
could match (13 digits or more for a card or a registration number, three dots for a dotted
quad); emails are looked for around each `@`, IPv6 addresses around colons. Prose costs next to
nothing; a dense 4 KB text is read in well under a millisecond (bench/pii_masking.py).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator

from tiller.common.pii import checks, phones
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


# The extensions of files that asset names carry (`icon@2x.png`, `hero@1.5x.jpg`): a "domain"
# ending in one is a file name. Extensions that are also TLDs in use for mail (.ai, .md, .sh,
# .zip, .mov, ...) are not listed.
_FILE_EXTENSIONS = frozenset(
    [
        "png",
        "jpg",
        "jpeg",
        "gif",
        "svg",
        "webp",
        "bmp",
        "ico",
        "tif",
        "tiff",
        "avif",
        "heic",
        "pdf",
        "js",
        "mjs",
        "cjs",
        "ts",
        "tsx",
        "jsx",
        "css",
        "scss",
        "sass",
        "less",
        "html",
        "htm",
        "json",
        "yaml",
        "yml",
        "toml",
        "ini",
        "txt",
        "log",
        "csv",
        "tsv",
        "xml",
        "tar",
        "gz",
        "tgz",
        "bz2",
        "xz",
        "zst",
        "7z",
        "rar",
        "exe",
        "dll",
        "bin",
        "dat",
        "lock",
        "wasm",
        "map",
        "woff",
        "woff2",
        "ttf",
        "otf",
        "eot",
        "mp3",
        "mp4",
        "wav",
        "ogg",
        "webm",
        "avi",
        "mkv",
        "psd",
    ]
)


def emails(text: str) -> Iterator[Finding]:
    """Read around each `@` only (a local part is at most 64 characters, a domain 255)."""
    at = text.find("@")
    done = 0
    while at != -1:
        match = _EMAIL.search(text, max(done, at - 65), min(len(text), at + 257))
        at = text.find("@", at + 1)
        if match is None or match.start() < done:
            continue
        done = match.end()
        while at != -1 and at < done:
            at = text.find("@", at + 1)
        local = match.group(1)
        if local.startswith(".") or local.endswith(".") or ".." in local:
            continue
        if match.group(2).rpartition(".")[2].lower() in _FILE_EXTENSIONS:
            continue
        yield Finding(EMAIL, match.start(), match.end(), 0.95)


# A card number is written together or in the issuers' groups: 4-4-4-4 (-3), Amex 4-6-5,
# Diners 4-6-4. What may follow: anything but another group of four (a 20-digit reference is
# not a card plus change), so "4111 1111 1111 1111 12/26" and two cards in a row are found.
_CARD_TOGETHER = re.compile(r"(?<![0-9])[0-9]{13,19}(?![0-9])")
_CARD_GROUPED = re.compile(
    r"(?<![0-9\-])(?<![0-9][ \-])[0-9]{4}([ \-])"
    r"(?:[0-9]{4}\1[0-9]{4}\1[0-9]{4}(?:\1[0-9]{3})?|[0-9]{6}\1[0-9]{4,5})"
    r"(?![0-9])(?!\1[0-9]{4}(?![0-9]))"
)


def cards(text: str, start: int = 0, end: int | None = None) -> list[Finding]:
    """The cards in text[start:end] (the text around it still counts for where one begins)."""
    end = len(text) if end is None else end
    found = []
    for match in _CARD_TOGETHER.finditer(text, start, end):
        if checks.card(match.group()):
            found.append(Finding(CARD, match.start(), match.end(), CARD_SCORE, checked=True))
    for match in _CARD_GROUPED.finditer(text, start, end):
        if checks.card(match.group()):
            found.append(Finding(CARD, match.start(), match.end(), CARD_SCORE, checked=True))
        elif len(match.group()) == 23 and checks.card(match.group()[:19]):  # 16 and a CVC
            found.append(Finding(CARD, match.start(), match.start() + 19, CARD_SCORE, checked=True))
    return found


CARD_SCORE = 0.95


_REGISTRATION = re.compile(
    r"(?<![0-9\-])([0-9]{6})( ?[\-\u2013] ?| )?([0-9]{7})(?![0-9])(?!-[0-9])"
)
# Words that name a registration number; each must stand as a word (findings.has_context):
# `arc` (alien registration card) is not the `arc` of parcel, March or search, and 주민 alone,
# which 주민센터 and 입주민 hold, is no context.
REGISTRATION_CONTEXT = (
    "주민등록",
    "주민 등록",
    "주민번호",
    "주민 번호",
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


def registrations(
    text: str, start: int = 0, end: int | None = None, today: datetime.date | None = None
) -> list[Finding]:
    end = len(text) if end is None else end
    today = today or datetime.date.today()
    found = []
    for match in _REGISTRATION.finditer(text, start, end):
        value = match.group(1) + match.group(3)
        kind = checks.registration_kind(value, today)
        if kind is None:
            continue
        checked = checks.registration_checksum(value)
        if checked:
            score = 0.95
        elif match.group(2):  # written with its separator, as people write these
            score = 0.75
        else:
            score = 0.3
        if score < 0.95 and has_context(
            text, match.start(), match.end(), REGISTRATION_CONTEXT, _CONTEXT_WINDOW
        ):
            score = min(1.0, score + 0.4)
        type_ = KR_RRN if kind == "resident" else KR_FRN
        found.append(Finding(type_, match.start(), match.end(), score, checked=checked))
    return found


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# ASCII edges: Korean text runs straight into an address ("10.0.0.1에서"). A dotted quad
# followed by a dot and a letter is a file's name (`setup-1.2.3.4.exe`, `glibc-2.35.0.1.el9`).
_IPV4 = re.compile(rf"(?<![A-Za-z0-9_.])(?:{_OCTET}\.){{3}}{_OCTET}(?![A-Za-z0-9_]|\.[A-Za-z0-9])")
_IPV6 = re.compile(
    r"(?<![A-Za-z0-9_:.])(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?:[0-9A-Fa-f]{1,4}|(?:[0-9]{1,3}\.){3}[0-9]{1,3})?(?![A-Za-z0-9_:(]|\.[0-9])"
)
# Above a phone number's: libphonenumber reads some dotted quads as numbers (10.10.1.25).
IP_SCORE = 0.92
# What, right before a dotted quad, makes it a version or a section number, not an address
# (read by names_a_version): a version word with up to four of the separators code and prose
# put after it (`Version: `, `version=`, `"version": "`, `<version>`, `AssemblyVersion("`,
# `버전 정보: `), a numbering word (`section`, `§`), a package pin (`==`, `>=`, `~=`), or a
# product's name and a slash as in a user agent (`Firefox/115.0.2.1`).
_VERSION_WORDS = frozenset({"ver", "release", "rel", "rev", "revision", "build", "v"})
_NUMBERING_WORDS = frozenset(
    [
        "section",
        "sec",
        "chapter",
        "ch",
        "table",
        "figure",
        "fig",
        "clause",
        "article",
        "art",
        "para",
        "paragraph",
    ]
)
_VERSION_SUFFIXES = frozenset({"info", "number", "no"})  # version info, version no.
_HANGUL_VERSION_WORDS = ("버전", "버젼", "릴리스", "릴리즈", "빌드")
_HANGUL_SUFFIXES = frozenset({"정보", "번호"})
_PINS = ("==", ">=", "<=", "~=", "!=", "^", "~")
_SEPARATORS = frozenset(" \t\n\r\"'():=>.-")
_BEFORE = 32  # characters before a dotted quad that names_a_version reads


def names_a_version(text: str, start: int) -> bool:
    """Whether what comes right before text[start] makes a dotted quad there a version."""
    left = max(0, start - _BEFORE)
    if start - left >= 2 and text[start - 1] == "/" and _ascii_letter(text[start - 2]):
        return True
    if text[left:start].rstrip().endswith(_PINS):
        return True
    end = start
    while end > left and start - end < 4 and text[end - 1] in _SEPARATORS:
        end -= 1
    if end > left and text[end - 1] == "§":
        return True
    word, begin = _word_before(text, left, end)
    if word.lower() in _VERSION_SUFFIXES or word in _HANGUL_SUFFIXES:
        while begin > left and text[begin - 1].isspace():
            begin -= 1
        word, begin = _word_before(text, left, begin)
    lowered = word.lower()
    return (
        "version" in lowered
        or lowered in _VERSION_WORDS
        or lowered in _NUMBERING_WORDS
        or word.endswith(_HANGUL_VERSION_WORDS)
    )


def _word_before(text: str, left: int, end: int) -> tuple[str, int]:
    """The word (Latin letters and _, or Hangul) that ends at `end`, and where it begins."""
    begin = end
    if begin > left and "\uac00" <= text[begin - 1] <= "\ud7a3":
        while begin > left and "\uac00" <= text[begin - 1] <= "\ud7a3":
            begin -= 1
    else:
        while begin > left and (_ascii_letter(text[begin - 1]) or text[begin - 1] == "_"):
            begin -= 1
    return text[begin:end], begin


def _ascii_letter(char: str) -> bool:
    return "a" <= char <= "z" or "A" <= char <= "Z"


def ipv4s(text: str, start: int = 0, end: int | None = None) -> list[Finding]:
    end = len(text) if end is None else end
    return [
        Finding(IP, match.start(), match.end(), IP_SCORE)
        for match in _IPV4.finditer(text, start, end)
        if not names_a_version(text, match.start())
    ]


def ipv6s(text: str) -> Iterator[Finding]:
    for left, right in _colon_runs(text):
        for match in _IPV6.finditer(text, left, min(len(text), right + 1)):
            value = match.group()
            if checks.ipv6(value) and not _code_not_address(value):
                yield Finding(IP, match.start(), match.end(), IP_SCORE)


def _code_not_address(value: str) -> bool:
    """What code writes with `::` that an IPv6 parser also accepts: scopes of hex-letter names
    (`A::f`, `dead::beef`: an address without a digit is no one's), and slices (`a[::2]`,
    `x[1::2]`: two groups of decimal digits; `::1`, the loopback, is an address)."""
    if not any(c.isdigit() for c in value):
        return True
    groups = [g for g in value.split(":") if g]
    return (
        len(groups) <= 2
        and "." not in value
        and value != "::1"
        and all(g.isdigit() for g in groups)
    )


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


def built_in(text: str, wanted: set[str] | frozenset[str]) -> list[Finding]:
    """The built-in detectors' findings of the `wanted` types, in one pass (module doc)."""
    found: list[Finding] = []
    if EMAIL in wanted and "@" in text:
        found += emails(text)
    if IP in wanted and ":" in text:
        found += ipv6s(text)
    phone, card, registration = PHONE in wanted, CARD in wanted, bool(_REGISTERED & wanted)
    dotted = IP in wanted and "." in text
    if not (phone or card or registration or dotted):
        return found
    long_numbers = card or registration
    today = datetime.date.today()
    budget = phones.budget_for(text)
    in_run, digit_count, starts = phones.in_run, phones.digit_count, phones.STARTS
    size = len(text)
    for at, group in phones.number_runs(text):
        if phone and len(group) >= 7 and (group[0] in starts or " " in group or "\t" in group):
            found += in_run(text, at, group, budget)
        if len(group) < 13 and not dotted:
            continue
        # Lookarounds see the text around the run; two characters past its end are enough
        # for every lookahead, and no match can reach past it (runs end where numbers do).
        end = min(at + len(group) + 2, size)
        if long_numbers and len(group) >= 13 and digit_count(group) >= 13:
            if card:
                found += cards(text, at, end)
            if registration:
                found += [f for f in registrations(text, at, end, today) if f.type in wanted]
        if dotted and group.count(".") >= 3:
            found += ipv4s(text, at, end)
    return found


_REGISTERED = frozenset({KR_RRN, KR_FRN})
