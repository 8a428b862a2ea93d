"""Precision and recall of the PII detectors per type, on the labelled corpora beside this file.

    python -m tests.pii.evaluate [--misses] [corpus.jsonl ...]

A finding counts as right when a labelled entity of the same type overlaps it; each labelled
entity is matched at most once. The scanner has the built-in detectors and the IBAN recognizer
docs/pii.md shows for models.yaml (a validated custom type, as deployments declare them).
tests/unit/test_pii_corpus.py holds every type of every corpus to the targets.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tiller.common.pii.recognizers import RecognizerSpec
from tiller.common.pii.scanner import Scanner

CORPUS = Path(__file__).with_name("corpus.jsonl")
CORPORA = sorted(CORPUS.parent.glob("*.jsonl"))
# docs/pii.md's example recognizer, as a models.yaml declares it.
IBAN = RecognizerSpec(
    type="IBAN",
    pattern=r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?",
    validator="iban",
)
RECALL_TARGET, PRECISION_TARGET = 0.98, 0.95


@dataclass(frozen=True)
class Case:
    text: str
    entities: list[tuple[str, int, int]]  # type, start, end
    note: str


@dataclass
class Score:
    true: Counter[str] = field(default_factory=Counter)
    found: Counter[str] = field(default_factory=Counter)
    labelled: Counter[str] = field(default_factory=Counter)
    misses: list[str] = field(default_factory=list)

    def precision(self, type_: str) -> float:
        return self.true[type_] / self.found[type_] if self.found[type_] else 1.0

    def recall(self, type_: str) -> float:
        return self.true[type_] / self.labelled[type_] if self.labelled[type_] else 1.0

    @property
    def types(self) -> list[str]:
        return sorted(set(self.labelled) | set(self.found))


def load(path: Path = CORPUS) -> list[Case]:
    cases = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        text, spans, taken = row["text"], [], Counter[str]()
        for type_, value in row["entities"]:
            start = _nth(text, value, taken[value])
            if start < 0:
                raise ValueError(f"{path.name}:{number}: {value!r} is not in the text")
            taken[value] += 1
            spans.append((type_, start, start + len(value)))
        cases.append(Case(text, spans, row.get("note", "")))
    return cases


def _nth(text: str, value: str, n: int) -> int:
    at = -1
    for _ in range(n + 1):
        at = text.find(value, at + 1)
        if at < 0:
            return -1
    return at


def evaluate(cases: list[Case], scanner: Scanner | None = None) -> Score:
    scanner = scanner or Scanner([IBAN])
    score = Score()
    for case in cases:
        open_ = list(case.entities)
        for type_, *_ in case.entities:
            score.labelled[type_] += 1
        for finding in scanner.find(case.text):
            score.found[finding.type] += 1
            match = next(
                (
                    e
                    for e in open_
                    if e[0] == finding.type and e[1] < finding.end and finding.start < e[2]
                ),
                None,
            )
            if match is not None:
                open_.remove(match)
                score.true[finding.type] += 1
            else:
                value = case.text[finding.start : finding.end]
                score.misses.append(f"false {finding.type}: {value!r} in {case.note!r}")
        for type_, start, end in open_:
            score.misses.append(f"missed {type_}: {case.text[start:end]!r} in {case.note!r}")
    return score


def report(score: Score, cases: int) -> str:
    lines = [
        f"{cases} cases; targets: precision >= {PRECISION_TARGET}, recall >= {RECALL_TARGET}",
        f"{'type':<8} {'labelled':>8} {'found':>6} {'right':>6} {'precision':>9} {'recall':>7}",
    ]
    for type_ in score.types:
        lines.append(
            f"{type_:<8} {score.labelled[type_]:>8} {score.found[type_]:>6} "
            f"{score.true[type_]:>6} {score.precision(type_):>9.3f} {score.recall(type_):>7.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", action="store_true", help="list every wrong or missed span")
    parser.add_argument("corpora", nargs="*", type=Path, help="default: every corpus here")
    args = parser.parse_args()
    everything: list[Case] = []
    for path in args.corpora or CORPORA:
        cases = load(path)
        everything += cases
        score = evaluate(cases)
        print(f"{path.name}: " + report(score, len(cases)))
        if args.misses:
            print("\n".join(score.misses) or "no misses")
        print()
    if len(args.corpora or CORPORA) > 1:
        print("all corpora: " + report(evaluate(everything), len(everything)))


if __name__ == "__main__":
    main()
