"""The router picks up models.yaml changes, and refuses a broken file while serving the last
good one."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tiller.router.config import ConfigError
from tiller.router.reload import Reloader
from tiller.router.service import RouterService
from tiller.router.table import compile_file

ONE = """\
models:
  demo:
    deployments:
      - {adapter: openai, endpoint: "http://127.0.0.1:9000/v1", task_queue: tiller.demo}
"""
TWO = (
    ONE
    + """\
  added:
    aliases: [new-one]
    deployments:
      - {adapter: vllm, endpoint: "http://127.0.0.1:8000/v1", task_queue: tiller.added}
"""
)
BROKEN = TWO.replace("aliases:", "alias:")


def write(path: Path, text: str, tick: int) -> None:
    path.write_text(text)
    os.utime(path, (1_700_000_000 + tick, 1_700_000_000 + tick))  # a distinct mtime each time


def test_a_changed_file_replaces_the_table(tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    write(models, ONE, 0)
    service = RouterService(compile_file(models))
    reloader = Reloader(models, service, interval_seconds=1)
    assert reloader.check() is False  # unchanged
    write(models, TWO, 1)
    assert reloader.check() is True
    assert service.table.resolve("new-one").name == "added"
    write(models, TWO, 2)  # touched, same content
    assert reloader.check() is False


def test_a_broken_file_is_refused_and_the_last_good_one_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models = tmp_path / "models.yaml"
    write(models, ONE, 0)
    service = RouterService(compile_file(models))
    reloader = Reloader(models, service, interval_seconds=1)
    good = service.table
    write(models, BROKEN, 1)
    with caplog.at_level(logging.ERROR, logger="tiller.router.reload"):
        assert reloader.check() is False
    assert service.table is good
    (record,) = caplog.records
    assert "models.added.alias: unknown field" in record.error  # type: ignore[attr-defined]
    assert reloader.check() is False  # refused once, not logged again every second
    assert len(caplog.records) == 1
    write(models, TWO, 2)  # fixed
    assert reloader.check() is True
    assert "added" in service.table.models


def test_an_edit_that_keeps_size_and_timestamp_is_seen(tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    four = ONE.replace("task_queue: tiller.demo}", "task_queue: tiller.demo, max_concurrency: 4}")
    write(models, four, 0)
    service = RouterService(compile_file(models))
    reloader = Reloader(models, service, interval_seconds=1)
    write(models, four.replace("max_concurrency: 4", "max_concurrency: 8"), 0)  # as cp -p
    assert reloader.check() is True
    assert service.table.models["demo"].deployments[0].max_concurrency == 8


def test_a_file_that_is_not_text_or_takes_a_reserved_queue_is_refused(tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    write(models, ONE, 0)
    service = RouterService(compile_file(models))
    reloader = Reloader(models, service, interval_seconds=1)
    models.write_bytes(ONE.encode() + b"# \xff\n")
    assert reloader.check() is False
    write(models, ONE.replace("tiller.demo", "tiller.failover"), 1)
    with pytest.raises(ConfigError, match="reserved for Tiller's failover and pipeline workflows"):
        compile_file(models)
    assert reloader.check() is False
    assert service.table.models["demo"].deployments[0].task_queue == "tiller.demo"
