"""Phone numbers: every number Google's libphonenumber (`phonenumbers`) calls valid, Korean
national forms (010-1234-5678, 02 123 4567, (031)123-4567, 01012345678) and international ones
with +. The scanner finds runs of digits and separators once (NUMBER_RUN, shared with the other
numeric detectors); each run is read here, and only what the library's own patterns cannot
settle is handed to its parser.
"""

from __future__ import annotations

import bisect
import functools
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

import phonenumbers

from tiller.common.pii.findings import PHONE, Finding

log = logging.getLogger(__name__)

# Runs of digits and the separators people type between them, starting with + (international)
# or 0 (a Korean trunk prefix: 010, 02, 031, 070, ...; business numbers such as 1588-xxxx are
# not personal data). A run may hold one number, several, or a number and what follows it
# ("010-1234-5678 3시"): it is split at whitespace and read piece by piece.
# A run may start right after a letter (`TEL010-1234-5678`) or a bracket (`((061)648-9515)`);
# glued_to_a_word decides whether a number glued to letters is a phone or part of an identifier.
NUMBER_RUN = re.compile(r"(?<![0-9+])(?:\(\+|[+(])?[0-9][0-9 \t().\-]*[0-9]")
# The same runs from their first digit: a pattern that starts with a digit class lets the regex
# engine skip the text between numbers at C speed (3x faster on dense text); the rare run right
# after + or ( is then read again with NUMBER_RUN itself (number_runs).
_DIGIT_RUN = re.compile(r"[0-9][0-9 \t().\-]*[0-9]")


def number_runs(text: str) -> list[tuple[int, str]]:
    """NUMBER_RUN's matches in `text`: (start, run)."""
    runs = []
    for match in _DIGIT_RUN.finditer(text):
        start = match.start()
        if start and text[start - 1] in "+(":
            exact = NUMBER_RUN.search(text, max(0, start - 2), match.end())
            if exact is not None:
                runs.append((exact.start(), exact.group()))
            continue
        runs.append((start, match.group()))
    return runs


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
    """Every phone number in `text`, read on its own (the scanner reads the runs once for every
    detector: detectors.built_in; a test holds the two to the same findings)."""
    budget = budget_for(text)
    for run in NUMBER_RUN.finditer(text):
        yield from in_run(text, run.start(), run.group(), budget, region)


def in_run(text: str, at: int, group: str, budget: Budget, region: str = "KR") -> list[Finding]:
    """The phone numbers in one run (`group`, at `at` in `text`)."""
    if budget.tries <= 0:
        if not budget.spent:
            log.warning("phone scan stopped early", extra={"characters": len(text)})
            budget.spent = True
        return []
    if " " not in group and "\t" not in group:  # one piece, as most numbers are written
        span = _one_piece(group, region, budget)
        if span is not None and not _glued_to_a_word(text, at + span[0], at + span[1]):
            return [Finding(PHONE, at + span[0], at + span[1], PHONE_SCORE)]
        return []
    numbers: list[Finding] = []
    pieces = [(m.start(), m.end()) for m in _PIECE.finditer(group)]
    counts = [0]  # digits in the pieces before each one
    for start, end in pieces:
        counts.append(counts[-1] + digit_count(group[start:end]))
    first, free = 0, 0  # free: the first piece not inside a number found
    while first < len(pieces):
        found = None
        if (
            budget.tries > 0
            and group[pieces[first][0]] in STARTS
            and _NUMBER_START.match(group, pieces[first][0])
            and not _inside_grouped_number(group, pieces, first, free)
        ):
            found = _phone_at(group, pieces, counts, first, region, budget)
        if found is None or _glued_to_a_word(text, at + found[1], at + found[2]):
            first += 1
            continue
        last, start, end = found
        numbers.append(Finding(PHONE, at + start, at + end, PHONE_SCORE))
        first = free = last + 1
    return numbers


# Letters a phone number is written glued to (`TEL010-1234-5678`, `HP01012345678`).
_PHONE_LABELS = frozenset(
    [
        "tel",
        "telephone",
        "phone",
        "ph",
        "mobile",
        "mob",
        "cell",
        "hp",
        "fax",
        "call",
        "contact",
        "m",
        "t",
        "f",
        "c",
    ]
)
_GROUP = re.compile(r"[0-9]{4}")


def _glued_to_a_word(text: str, start: int, end: int) -> bool:
    """A number right after Latin letters is an identifier's tail (`SKU01012345678`), unless
    the letters are a phone label or the number is written as one (separators, or +)."""
    if start == 0 or not ("A" <= text[start - 1] <= "Z" or "a" <= text[start - 1] <= "z"):
        return False
    letters = start - 1
    while letters > 0 and text[letters - 1].isascii() and text[letters - 1].isalpha():
        letters -= 1
    if text[letters:start].lower() in _PHONE_LABELS:
        return False
    number = text[start:end]
    return not (number.startswith("+") or any(sep in number for sep in " -.()"))


def _inside_grouped_number(run: str, pieces: list[tuple[int, int]], first: int, free: int) -> bool:
    """Piece `first` is a group of four digits after another such group that no number took:
    the middle of an account number or IBAN written in fours (`3704 0044 0532 0130`), not the
    start of a phone number."""
    if first == 0 or first - 1 < free:
        return False
    start, end = pieces[first]
    before = pieces[first - 1]
    return bool(_GROUP.fullmatch(run, start, end) and _GROUP.fullmatch(run, before[0], before[1]))


# How a number's first piece starts: +country code, or a trunk 0 and another digit ("02"),
# maybe in parentheses.
_NUMBER_START = re.compile(r"\+[0-9]|\(?0[0-9]|\(\+[0-9]")
STARTS = frozenset("+(0")
_WITHOUT_DIGITS = str.maketrans("", "", "0123456789")


def digit_count(piece: str) -> int:
    return len(piece) - len(piece.translate(_WITHOUT_DIGITS))


def _one_piece(group: str, region: str, budget: Budget) -> tuple[int, int] | None:
    """_phone_at for a run of one piece (`010-1234-5678`, `(02)123-4567`, `+821012345678`),
    without its search over pieces: the run is the number or is not."""
    if len(group) < _MIN_PHONE_DIGITS or group[0] not in STARTS or not _NUMBER_START.match(group):
        return None
    number = group.translate(_ONLY_DIGITS)
    if not _MIN_PHONE_DIGITS <= len(number) <= _MAX_PHONE_DIGITS:
        return None
    budget.tries -= 1
    start, span = 0, group
    international = group.lstrip("(").startswith("+")
    if group.startswith("(") and ")" not in group:  # "(010-1234-5678": not its paren
        start, span = 1, group[1:]
    valid = _plainly_valid(number, international)
    if not valid and international and budget.library > 0:
        budget.library -= 1
        valid = is_phone(span, region)
    return (start, len(group)) if valid else None


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


@dataclass(slots=True)
class Budget:
    """What one text may cost: libphonenumber calls, and numbers tried in all. Past it, the
    rest of the text is not searched for phone numbers (a warning is logged): text built to
    be slow (100 KB of "00 00 00") stops costing after about 0.15 s, while real text, phone
    lists included, stays far inside it. Masking protects a caller's data from engines and
    storage; it does not stop a caller set on writing a number no detector reads."""

    library: int
    tries: int
    spent: bool = False  # the scan stopped (and said so)


def budget_for(text: str) -> Budget:
    return Budget(_LIBRARY_CALLS, len(text) // 2 + 2000)


PHONE_SCORE = 0.9


def is_phone(value: str, region: str = "KR") -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(value, region))
    except phonenumbers.NumberParseException:
        return False
