"""The scanner's one pass over a text (detectors.built_in: the runs of digits found once, each
detector reading only the runs it could match) finds exactly what each detector finds reading
the whole text on its own: the speed-ups change no finding."""

from __future__ import annotations

import re

import pytest

from tests.pii import evaluate
from tiller.common.pii import detectors, phones
from tiller.common.pii.findings import BUILT_IN_TYPES, Finding
from tiller.common.pii.scanner import ascii_forms

TRICKY = [
    "1+82 10-1234-5678",
    "((061)648-9515)",
    "(+82) 10-1234-5678 and ++82 10 1234",
    "5(02)123-4567 x(02)123-4567",
    "+(02)123 (+ 010-1234-5678",
    "a+010-1234-5678 12+34 (12)",
    "version=1.2.3.4 10.0.0.1.exe 10.0.0.1",
]


def texts() -> list[str]:
    corpus = [case.text for path in evaluate.CORPORA for case in evaluate.load(path)]
    dense = "\n".join(corpus)
    return [*corpus, *TRICKY, dense, "가나 " * 50 + dense[:3000] + " 12 34"]


def one_by_one(text: str) -> list[Finding]:
    return [
        *detectors.emails(text),
        *detectors.ipv6s(text),
        *phones.phones(text),
        *detectors.cards(text),
        *detectors.registrations(text),
        *detectors.ipv4s(text),
    ]


def test_one_pass_finds_what_every_detector_finds_alone() -> None:
    for text in map(ascii_forms, texts()):
        assert sorted(detectors.built_in(text, frozenset(BUILT_IN_TYPES))) == sorted(
            one_by_one(text)
        ), text[:200]


@pytest.mark.parametrize("text", TRICKY)
def test_the_runs_are_the_number_pattern_s_own(text: str) -> None:
    expected = [(m.start(), m.group()) for m in phones.NUMBER_RUN.finditer(text)]
    assert phones.number_runs(text) == expected


def test_no_run_is_found_twice_or_left_out_in_the_corpus() -> None:
    for text in texts():
        expected = [(m.start(), m.group()) for m in phones.NUMBER_RUN.finditer(text)]
        assert phones.number_runs(text) == expected, text[:200]


def test_only_the_types_asked_for_are_looked_for() -> None:
    text = "kim@example.com 010-1234-5678 10.0.0.1 " + re.sub(r"\s", " ", TRICKY[0])
    assert {f.type for f in detectors.built_in(text, frozenset({"PHONE"}))} == {"PHONE"}
