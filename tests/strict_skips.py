"""pytest plugin: in CI, a skip for a missing external resource is a failure.

``helpers.require_shared`` / ``require_module`` already fail under CI; this
catches the same kind of skip raised any other way — a bare
``pytest.importorskip`` ("could not import …") or a skip whose reason starts with
``helpers.MISSING`` — at run time and at collection (a module-level skip). Other
skips (none today) pass through untouched.
"""
from __future__ import annotations

import pytest

from helpers import MISSING, no_skips

_KINDS = (MISSING, "could not import")


def _reason(longrepr) -> str | None:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return None


def _strict_reason(report) -> str | None:
    if not (report.skipped and no_skips()):
        return None
    reason = _reason(report.longrepr) or ""
    text = reason.removeprefix("Skipped: ")
    return reason if text.startswith(_KINDS) else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    reason = _strict_reason(report)
    if reason is not None:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    reason = _strict_reason(report)
    if reason is not None:
        report.outcome = "failed"
        report.longrepr = f"module skipped in CI, which counts as a failure: {reason}"
