"""Which models a key may use: glob patterns of model names or aliases (`llama-*`, `demo`).

The gateway filters model listings with it; quota's admission script checks the same patterns
(as Lua patterns, quota/keys.py) when it admits a request.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence


def model_allowed(patterns: Sequence[str], *names: str) -> bool:
    """Whether any of `names` (a model and its aliases) matches any pattern; none = all."""
    return not patterns or any(fnmatch.fnmatchcase(n, p) for p in patterns for n in names if n)
