"""The distribution maps services/ to `tiller` and protos/ to `tiller.protos`; every package
folder must be listed in pyproject.toml or it would be missing from the installed wheel."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for folder, name in (("services", "tiller"), ("protos", "tiller.protos")):
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *parts)))
    assert found == listed


def test_every_service_runs_as_a_module() -> None:
    for service in ("gateway", "router", "quota", "worker", "demo_engine"):
        assert (ROOT / "services" / service / "__main__.py").is_file()
