"""models.yaml `pii`: the default policy, per-model policies, custom recognizers, and the
settings the router hands the gateway (fallback models' policies included)."""

from __future__ import annotations

import json

import pytest

from tiller.router.config import ConfigError, parse
from tiller.router.table import compile_models

FILE = """\
pii:
  policy: {{mode: mask}}
  min_score: 0.6
  recognizers:
    - type: EMPLOYEE_ID
      pattern: 'E\\d{{6}}'
      context: [사번]
      score: 0.3
models:
  local:
    pii: off
    fallbacks: [hosted]
    deployments: [{{adapter: openai, endpoint: "http://a:1/v1"}}]
  hosted:
    pii: {{mode: block, types: [KR_RRN, EMPLOYEE_ID]}}
    deployments: [{{adapter: openai, endpoint: "http://b:1/v1"}}]
  plain:
    deployments: [{{adapter: openai, endpoint: "http://c:1/v1"}}]
{extra}"""


def table(extra: str = ""):  # type: ignore[no-untyped-def]
    text = FILE.format(extra=extra)
    return compile_models(parse(text), text.encode(), created=1)


def test_a_model_is_under_its_policy_and_its_fallbacks() -> None:
    routes = table()
    local = routes.resolve("local")
    assert [(p.mode, p.types) for p in routes.pii_policies(local)] == [
        ("off", []),
        ("block", ["KR_RRN", "EMPLOYEE_ID"]),
    ]
    assert [p.mode for p in routes.pii_policies(routes.resolve("plain"))] == ["mask"]
    assert routes.pii.min_score == 0.6
    [recognizer] = json.loads(routes.pii.recognizers_json)
    assert recognizer["type"] == "EMPLOYEE_ID" and recognizer["context"] == ["사번"]


def test_masking_is_the_default() -> None:
    text = "models:\n  m:\n    deployments: [{adapter: openai, endpoint: 'http://a:1/v1'}]\n"
    routes = compile_models(parse(text), text.encode(), created=1)
    assert [p.mode for p in routes.pii_policies(routes.resolve("m"))] == ["mask"]


@pytest.mark.parametrize(
    ("yaml", "expected"),
    [
        (
            FILE.format(extra="").replace("[KR_RRN, EMPLOYEE_ID]", "[KR_RRN, PASSPORT]"),
            "models.yaml:15: models.hosted.pii[0].types[1]: unknown PII type 'PASSPORT'",
        ),
        (
            FILE.format(extra="").replace("pii: off", "pii: hide"),
            "models.yaml:11: models.local.pii[0].mode: Input should be 'off', 'mask', 'mask+restore'",
        ),
        (
            FILE.format(extra="").replace("'E\\d{6}'", "'E(\\d'"),
            "models.yaml:6: pii.recognizers[0].pattern: not a valid regular expression",
        ),
        (
            FILE.format(extra="").replace("type: EMPLOYEE_ID", "type: EMAIL"),
            "models.yaml:5: pii.recognizers[0].type: EMAIL is a built-in type",
        ),
    ],
)
def test_errors_name_the_line_and_field(yaml: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(yaml)
    assert expected in str(error.value)


def test_off_in_a_mapping_reads_as_off() -> None:
    text = FILE.format(extra="").replace("pii: off", "pii: {mode: off, types: [IP]}")
    routes = compile_models(parse(text), text.encode(), created=1)
    assert routes.pii_policies(routes.resolve("local"))[0].mode == "off"
    assert "EMPLOYEE_ID" in routes.pii.types
