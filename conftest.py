"""Project-wide pytest hooks.

A test may skip only where the platform lacks a feature (no sqlite3 shell, no
database server, ...), and says why. CI sets FACEVEC_REQUIRE_ALL=1, which
turns every such skip into a failure, so CI exercises every path.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ALL = os.environ.get("FACEVEC_REQUIRE_ALL", "") not in ("", "0")


def _strict(report) -> None:
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, but FACEVEC_REQUIRE_ALL=1 requires this path: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    # A module-level importorskip skips a whole file at collection time.
    outcome = yield
    _strict(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _strict(outcome.get_result())
