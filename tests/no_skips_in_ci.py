"""A pytest plugin: under ``CI=true`` a skipped test is a failed test.

A skip counted as a pass hides a missing server or tool exactly where the suite is meant to prove
everything runs. Outside CI a skip stays a skip, and ``-rs`` (pyproject's addopts) names its
reason in the summary. Expected failures (``xfail``) are not skips and are left alone.

tests/conftest.py loads it; ``pytest -p no_skips_in_ci`` loads it anywhere ``tests/`` is on the
path.
"""
from __future__ import annotations

import os
from collections.abc import Generator
from typing import TypeVar

import pytest

__all__ = ["pytest_make_collect_report", "pytest_runtest_makereport"]

Report = TypeVar("Report", pytest.TestReport, pytest.CollectReport)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A test (or its fixture) that skips fails instead, naming the skip's reason."""
    return _fail_if_skipped_in_ci((yield))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A module that skips at import (``pytest.importorskip``, ``allow_module_level``) fails too."""
    return _fail_if_skipped_in_ci((yield))


def _fail_if_skipped_in_ci(report: Report) -> Report:
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("CI") == "true":
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where nothing may skip: {_reason(report)}"
    return report


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    # A skip's longrepr is (file, line, "Skipped: reason").
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        path, line, message = report.longrepr
        return f"{message} ({path}:{line})"
    return str(report.longrepr)
