"""Quota's metrics (common/metrics.py serves them)."""

from __future__ import annotations

from prometheus_client import Counter

ADMISSIONS = Counter(
    "tiller_quota_admissions",
    "Admission decisions: outcome (admitted, rate_limited, concurrency, budget, too_large, "
    "forbidden, unauthenticated), scope of the limit (key, team, model) and which limit "
    "(rpm, tpm, concurrency, tokens_per_day, tokens_per_month).",
    ["outcome", "scope", "limit"],
)
