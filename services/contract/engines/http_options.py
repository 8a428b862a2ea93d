"""`options:` of the HTTP engine kinds (openai, vllm, tgi): where an engine's API key comes from.

A hosted API's key is a secret: models.yaml names the environment variable or the file that
holds it, the worker reads it when it calls the engine (worker/adapters/http_options.py), and
it never travels through the router, Temporal or Redis.
"""

from __future__ import annotations

from typing import Any

KEYS = ("api_key_env", "api_key_file")


def check_options(options: dict[str, Any]) -> None:
    for key, value in options.items():
        if key not in KEYS:
            raise ValueError(f"unknown option {key!r} (known: {', '.join(KEYS)})")
        if not isinstance(value, str) or not value:
            raise ValueError(f"{key}: expected a non-empty string")
    if len(options) > 1:
        raise ValueError("set one of api_key_env and api_key_file, not both")
