"""Docs describe what exists: every setting the code reads is in docs/configuration.md, and the
README's quick start is the one `.ci/run` runs."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support import service_env_names
from tiller.cli.up import UpSettings
from tiller.common.settings import env_names

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented() -> None:
    documented = set(
        re.findall(r"`(TILLER_[A-Z_]*[A-Z])`", (ROOT / "docs/configuration.md").read_text())
    )
    read = service_env_names() | env_names(UpSettings, "TILLER_UP_")
    assert not read - documented, f"undocumented: {sorted(read - documented)}"
    assert not documented - read, f"documented but not read: {sorted(documented - read)}"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in quick_start.splitlines()[1:] if line.strip()]
    assert commands == ["./dev up", "./dev test"]
    assert "./dev test" in (ROOT / ".ci/run").read_text()
