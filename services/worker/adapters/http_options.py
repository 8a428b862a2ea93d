"""The API key an HTTP engine's deployment names in its `options:` (checked by the router with
contract/engines/http_options.py), read by the worker when it calls the engine: the secret
itself never travels through the router, Temporal or Redis."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tiller.common.errors import EngineError


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
