"""The fuzz tier's summary (requests per endpoint and status, anomalies, the log check) goes into
pytest's own report, so every run's output has it, CI's included, not only runs with `-s`."""

from __future__ import annotations

import pytest

from tests.fuzz.test_fuzz import TALLY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TALLY.sent:
        terminalreporter.section("fuzz tier")
        terminalreporter.write_line(TALLY.summary())
