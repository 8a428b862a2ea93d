"""Redis URLs: Sentinel URLs in every form a deployment writes them, and a URL Tiller cannot use
stops the service with one line that never repeats the URL (it may hold a password)."""

from __future__ import annotations

import pytest

from tiller.common.lifecycle import StartupError
from tiller.common.redis_client import SentinelURL, check, parse_sentinel


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://s0.redis:26380,s1.redis/mymaster/2",
            SentinelURL([("s0.redis", 26380), ("s1.redis", 26379)], "mymaster", 2),
        ),
        (
            "redis+sentinel://tiller:p%40ss@10.0.0.1,[fd00::2]:5000,[fd00::3]/m",
            SentinelURL(
                [("10.0.0.1", 26379), ("fd00::2", 5000), ("fd00::3", 26379)],
                "m",
                username="tiller",
                password="p@ss",
            ),
        ),
        (
            "redis+sentinel://:secret@sentinel/m/0?sentinel_password=other",
            SentinelURL([("sentinel", 26379)], "m", password="secret", sentinel_password="other"),
        ),
    ],
)
def test_sentinel_urls(url: str, expected: SentinelURL) -> None:
    assert parse_sentinel(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://:hunter2@s0:26379",  # no master name
        "redis+sentinel://:hunter2@s0:port/m",
        "redis+sentinel://:hunter2@s0/m/zero",
        "redis+sentinel://:hunter2@s0/m?tls=1",
        "http://:hunter2@localhost:6379/0",
        "redis://:hunter2@localhost:port/0",
    ],
)
def test_an_unusable_url_is_one_line_without_its_password(url: str) -> None:
    with pytest.raises(StartupError) as refused:
        check(url)
    assert str(refused.value).startswith("invalid Redis URL: ")
    assert "hunter2" not in str(refused.value)


def test_usable_urls_pass() -> None:
    for url in ("redis://localhost:6379/0", "rediss://:pw@host/1", "unix:///tmp/redis.sock"):
        check(url)
