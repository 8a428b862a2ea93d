"""`options:` of the HTTP adapters (openai, vllm, tgi): where an engine's API key comes from.

A hosted API's key is a secret: models.yaml names the environment variable or the file that
holds it, the worker reads it when it calls the engine, and it never travels through the
router, Temporal or Redis.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tiller.common.errors import EngineError

KEYS = ("api_key_env", "api_key_file")


def check_options(options: dict[str, Any]) -> None:
    for key, value in options.items():
        if key not in KEYS:
            raise ValueError(f"unknown option {key!r} (known: {', '.join(KEYS)})")
        if not isinstance(value, str) or not value:
            raise ValueError(f"{key}: expected a non-empty string")
    if len(options) > 1:
        raise ValueError("set one of api_key_env and api_key_file, not both")


def api_key(options: dict[str, Any]) -> str | None:
    """The key the deployment's options point to; EngineError when it is not there."""
    if name := options.get("api_key_env"):
        value = os.environ.get(name, "").strip()
        if not value:
            raise EngineError(f"The engine's API key variable {name} is not set on this worker.")
        return value
    if path := options.get("api_key_file"):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            raise EngineError(f"The engine's API key file {path} cannot be read.") from None
        if not value:
            raise EngineError(f"The engine's API key file {path} is empty.")
        return value
    return None
