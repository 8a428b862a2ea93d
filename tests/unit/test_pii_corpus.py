"""The detectors against the labelled corpus (tests/pii/corpus.jsonl): every type must reach
the targets. `python -m tests.pii.evaluate --misses` prints the table and each miss."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pii import evaluate

CORPORA = sorted(Path(evaluate.__file__).parent.glob("*.jsonl"))


@pytest.mark.parametrize("corpus", CORPORA, ids=lambda p: p.name)
def test_every_type_reaches_the_targets(corpus: Path) -> None:
    cases = evaluate.load(corpus)
    score = evaluate.evaluate(cases)
    table = evaluate.report(score, len(cases)) + "\n" + "\n".join(score.misses)
    for type_ in score.types:
        assert score.recall(type_) >= evaluate.RECALL_TARGET, table
        assert score.precision(type_) >= evaluate.PRECISION_TARGET, table


def test_the_corpus_is_big_and_has_near_misses() -> None:
    cases = evaluate.load()
    assert len(cases) >= 200
    assert sum(1 for c in cases if not c.entities) >= 50
    assert sum(1 for c in cases if any("\uac00" <= ch <= "\ud7a3" for ch in c.text)) >= 60
