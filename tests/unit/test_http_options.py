"""The HTTP adapters' `options:`: a hosted API's key comes from the worker's environment or a
file, read when the engine is called, and is sent as a bearer token."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiller.common.errors import EngineError
from tiller.contract.requests import Target
from tiller.worker.adapters.openai_compatible import headers


def target(**options: str) -> Target:
    return Target("d", "openai", "http://engine/v1", "m", "q", options=dict(options))


def test_no_key_sends_no_authorization() -> None:
    assert "authorization" not in headers(target())


def test_the_key_comes_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_KEY", "sk-test-123\n")
    assert headers(target(api_key_env="ENGINE_KEY"))["authorization"] == "Bearer sk-test-123"


def test_the_key_comes_from_the_named_file(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("sk-file-456\n")
    options = {"api_key_file": str(tmp_path / "key")}
    assert headers(target(**options))["authorization"] == "Bearer sk-file-456"


def test_a_missing_key_is_an_engine_error_that_names_where_not_what(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ENGINE_KEY", raising=False)
    with pytest.raises(EngineError, match="ENGINE_KEY is not set"):
        headers(target(api_key_env="ENGINE_KEY"))
    with pytest.raises(EngineError, match="cannot be read"):
        headers(target(api_key_file=str(tmp_path / "absent")))
