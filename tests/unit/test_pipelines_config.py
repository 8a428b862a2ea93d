"""Pipeline models in models.yaml: validated at load like any model, steps named by model."""

from __future__ import annotations

import json

import pytest

from tiller.pipelines import PIPELINES, options_model
from tiller.pipelines.base import PipelineOptions
from tiller.pipelines.classify_then_generate import label_of
from tiller.router.config import ConfigError, parse
from tiller.router.table import compile_models

GOOD = """\
models:
  fast:
    aliases: [fast-latest]
    deployments:
      - adapter: openai
        endpoint: http://fast:8000/v1
  strong:
    pii: mask+restore
    deployments:
      - adapter: vllm
        endpoint: http://strong:8000/v1
  careful:
    pipeline:
      workflow: draft-then-refine
      options: {draft: fast-latest, refine: strong}
  helpdesk:
    pipeline:
      workflow: classify-then-generate
      options:
        classifier: fast
        default: general
        routes:
          code: {model: strong, system: Answer with code.}
          general: {model: fast}
"""


def test_a_pipeline_model_compiles_with_its_steps_by_canonical_name() -> None:
    table = compile_models(parse(GOOD), GOOD.encode())
    careful = table.resolve("careful")
    assert careful.deployments == ()
    assert careful.pipeline is not None
    assert careful.pipeline.workflow == "draft-then-refine"
    assert careful.pipeline.steps == ("fast", "strong")
    assert json.loads(careful.pipeline.options_json) == {"draft": "fast-latest", "refine": "strong"}
    # The steps' models see the request too: their PII policies apply to it.
    assert {p.mode for p in table.pii_policies(careful)} == {"mask", "mask+restore"}
    assert table.resolve("fast").pipeline is None


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("refine: strong}", "refine: strongest}"),
            "models.yaml:15: models.careful.pipeline.options.refine: 'strongest' is not a model "
            "in this file",
        ),
        (
            ("{model: strong, system", "{model: helpdesk, system"),
            "models.yaml:23: models.helpdesk.pipeline.options.routes.code.model: 'helpdesk' is a "
            "pipeline; a step calls a model with deployments",
        ),
        (
            ("workflow: draft-then-refine", "workflow: draft-and-refine"),
            "models.yaml:14: models.careful.pipeline.workflow: unknown pipeline 'draft-and-refine' "
            "(known: classify-then-generate, draft-then-refine, fan-out-merge, human-approval, summarize-then-answer)",
        ),
        (
            ("default: general", "default: other"),
            "models.yaml:19: models.helpdesk.pipeline.options: default 'other' is not one of the "
            "routes (code, general)",
        ),
        (
            ("{draft: fast-latest, refine: strong}", "{draft: fast, refine: strong, tone: x}"),
            "models.yaml:15: models.careful.pipeline.options: tone: unknown field",
        ),
        (
            ("{draft: fast-latest, refine: strong}", "{draft: fast}"),
            "models.yaml:15: models.careful.pipeline.options: refine: required field is missing",
        ),
    ],
)
def test_a_bad_pipeline_is_refused_at_load_naming_line_and_field(
    edit: tuple[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(GOOD.replace(*edit))
    assert str(caught.value) == expected


def test_a_model_has_deployments_or_a_pipeline_and_a_pipeline_has_no_fallbacks() -> None:
    both = GOOD.replace(
        "  careful:\n    pipeline:",
        "  careful:\n    deployments: [{adapter: openai, endpoint: 'http://x:1/v1'}]\n    pipeline:",
    )
    with pytest.raises(ConfigError, match="careful: a model has 'deployments' or a 'pipeline'"):
        parse(both)
    with pytest.raises(ConfigError, match="empty: a model needs 'deployments'"):
        parse(GOOD + "  empty: {owned_by: me}\n")
    with pytest.raises(ConfigError, match="a pipeline model has no 'fallbacks'"):
        parse(GOOD.replace("  careful:\n", "  careful:\n    fallbacks: [fast]\n"))
    with pytest.raises(ConfigError, match="fallbacks\\[0\\]: 'careful' is a pipeline"):
        parse(
            GOOD.replace(
                "  strong:\n    pii: mask+restore\n", "  strong:\n    fallbacks: [careful]\n"
            )
        )


def test_every_registered_pipeline_has_options_that_name_its_models() -> None:
    for name in PIPELINES:  # its own named_models, not the base's (which raises)
        assert options_model(name).named_models is not PipelineOptions.named_models, name


def test_a_step_models_fallbacks_policies_apply_to_the_pipeline() -> None:
    text = GOOD.replace(
        "  careful:\n",
        "  outside:\n    pii: block\n    deployments:\n      - adapter: openai\n"
        "        endpoint: http://outside:8000/v1\n  careful:\n",
    ).replace(
        "      - adapter: openai\n        endpoint: http://fast:8000/v1\n",
        "      - adapter: openai\n        endpoint: http://fast:8000/v1\n"
        "    fallbacks: [outside]\n",
        1,
    )
    table = compile_models(parse(text), text.encode())
    assert "block" in {p.mode for p in table.pii_policies(table.resolve("fast"))}
    # `fast` may fall back to `outside`: a pipeline over `fast` is under `outside`'s policy too.
    assert "block" in {p.mode for p in table.pii_policies(table.resolve("careful"))}


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("code", "code"),
        ("Code.", "code"),
        ("You said: show me python code please", "code"),
        ("billing", "general"),
        ("", "general"),
    ],
)
def test_the_label_is_the_first_word_of_the_classifiers_answer_that_names_a_route(
    answer: str, label: str
) -> None:
    assert label_of(answer, ["code", "general"], "general") == label


def test_an_approval_that_outlasts_its_pipeline_is_refused_at_load() -> None:
    text = GOOD + (
        "  approved:\n    pipeline:\n      workflow: human-approval\n"
        "      options: {draft: fast, approval_timeout_seconds: 300}\n"
    )
    with pytest.raises(
        ConfigError,
        match=r"approval_timeout_seconds: waits 300 s, but the model's "
        r"timeout_seconds \(120\) ends the run first",
    ):
        parse(text)
    longer = text.replace("  approved:\n", "  approved:\n    timeout_seconds: 400\n")
    assert parse(longer).models["approved"].timeout_seconds == 400


@pytest.mark.parametrize(
    ("routes", "problem"),
    [
        ("{c++: {model: fast}, general: {model: fast}}", "a label is one word"),
        ("{Code: {model: fast}, code: {model: strong}, general: {model: fast}}", "only in case"),
    ],
)
def test_classifier_labels_the_classifier_can_answer(routes: str, problem: str) -> None:
    text = GOOD.replace(
        "        routes:\n          code: {model: strong, system: Answer with code.}\n"
        "          general: {model: fast}\n",
        f"        routes: {routes}\n",
    )
    assert text != GOOD
    with pytest.raises(ConfigError, match=problem):
        parse(text)
