"""Docs describe what exists: every setting the code reads is in docs/configuration.md, every
models.yaml example in docs/models.md is valid, and the README's quick start is the one `.ci/run`
runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import service_env_names
from tiller.cli import admin
from tiller.cli.up import UpSettings
from tiller.common.settings import env_names
from tiller.contract.engines import KINDS
from tiller.router.config import ConfigError, parse
from tiller.router.table import compile_models

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented() -> None:
    documented = set(
        re.findall(r"`(TILLER_[A-Z_]*[A-Z])`", (ROOT / "docs/configuration.md").read_text())
    )
    read = service_env_names() | env_names(UpSettings, "TILLER_UP_") | set(admin.ENVIRONMENT)
    assert not read - documented, f"undocumented: {sorted(read - documented)}"
    assert not documented - read, f"documented but not read: {sorted(documented - read)}"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in quick_start.splitlines()[1:] if line.strip()]
    assert commands == ["./dev up", "./dev test"]
    assert "./dev test" in (ROOT / ".ci/run").read_text()
    # The real-engine and compose tiers: README names their commands, and CI runs them.
    for tier in ("./dev test-engines", "./dev test-compose"):
        assert f"`{tier}`" in readme
        assert tier in (ROOT / ".ci/run").read_text()


def test_every_models_yaml_example_in_the_docs_is_valid() -> None:
    """docs/models.md's examples parse and compile as written (options checked per adapter)."""
    text = (ROOT / "docs/models.md").read_text()
    examples = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    assert len(examples) >= 5  # every field, and one per adapter
    adapters = set()
    for example in examples:
        table = compile_models(parse(example, "docs/models.md"), example.encode())
        adapters |= {d.adapter for m in table.models.values() for d in m.deployments}
    assert adapters == set(KINDS)


def test_the_pii_guides_models_yaml_is_valid() -> None:
    """docs/pii.md's models.yaml compiles as written, with the errors it quotes."""
    text = (ROOT / "docs/pii.md").read_text()
    [example] = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    table = compile_models(parse(example, "models.yaml"), example.encode())
    assert [p.mode for p in table.pii_policies(table.resolve("hosted"))] == ["mask", "block"]
    broken = example.replace("CARD, EMPLOYEE_ID]", "CARD, EMPLOYEE_NO]")
    with pytest.raises(ConfigError) as error:
        parse(broken, "models.yaml")
    quoted = " ".join(text.split("Errors name the line: `")[1].split("`.")[0].split())
    assert str(error.value) == quoted


def test_the_adapter_guide_shows_the_toy_adapter_and_its_test_as_they_are() -> None:
    """docs/adapters.md's worked example is the code in tests/toy_adapter/, to the character."""
    guide = (ROOT / "docs/adapters.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", guide, flags=re.DOTALL)
    for name in ("engine.py", "adapter.py", "test_toy_adapter.py"):
        assert (ROOT / "tests/toy_adapter" / name).read_text() in blocks, name


def test_the_pipelines_guide_runs_as_written() -> None:
    """docs/pipelines.md's models.yaml examples and docs/pipelines.yaml compile; the pipeline it
    shows whole is the shipped module, to the character."""
    guide = (ROOT / "docs/pipelines.md").read_text()
    for example in re.findall(r"```yaml\n(.*?)```", guide, flags=re.DOTALL):
        compile_models(parse(example, "docs/pipelines.md"), example.encode())
    tried = (ROOT / "docs/pipelines.yaml").read_text()
    compile_models(parse(tried, "docs/pipelines.yaml"), tried.encode())
    module = (ROOT / "services/pipelines/summarize_then_answer.py").read_text()
    assert module in re.findall(r"```python\n(.*?)```", guide, flags=re.DOTALL)
