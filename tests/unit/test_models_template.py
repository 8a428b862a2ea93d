"""models.template.yaml loads as written and explains every field the parser knows."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from tiller.common.pii.recognizers import RecognizerSpec
from tiller.router import config
from tiller.router.table import compile_models

TEMPLATE = Path(__file__).resolve().parents[2] / "models.template.yaml"
FILE_MODELS: list[type[BaseModel]] = [
    config.ModelsFile,
    config.ModelFile,
    config.DeploymentFile,
    config.RetryFile,
    config.DefaultsFile,
    config.LimitsFile,
    config.PiiFile,
    config.PiiPolicyFile,
    config.PipelineFile,
    RecognizerSpec,
]


def test_the_template_loads_and_compiles_as_written() -> None:
    text = TEMPLATE.read_text()
    table = compile_models(config.parse(text, str(TEMPLATE)), text.encode())
    assert table.resolve("llama").name == "llama-3.1-8b"
    pipeline = table.resolve("careful").pipeline
    assert pipeline is not None and pipeline.steps == ("small", "llama-3.1-8b")


def test_the_template_names_every_field_of_the_file() -> None:
    keys = set(re.findall(r"^\s*(?:- )?([a-z_]+):", TEMPLATE.read_text(), flags=re.MULTILINE))
    keys |= set(re.findall(r"[{,]\s*([a-z_]+):", TEMPLATE.read_text()))
    fields = {name for model in FILE_MODELS for name in model.model_fields}
    assert not fields - keys, f"not in the template: {sorted(fields - keys)}"
